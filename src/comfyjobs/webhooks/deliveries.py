"""Webhook deliveries in Redis (keys.WEBHOOKS_DUE, keys.webhook): taking the due ones, and recording how
an attempt went, each in one script. A delivery is created by the status change itself (jobs.scripts)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import ValidationError

from comfyjobs import keys
from comfyjobs.jobs.record import JobRecord, decode_record
from comfyjobs.jobs.store import text, translated
from comfyjobs.metrics import WEBHOOK_DELIVERIES

# KEYS[1] due set; ARGV[1] now, [2] visible again at, [3] how many, [4] delivery key prefix
TAKE_DUE = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  out[#out + 1] = {id, redis.call('HGETALL', ARGV[4] .. id)}
end
return out
"""

# KEYS[1] due set, [2] the delivery, [3] the task's record, [4] the results metric, [5] the due set's changes
# ARGV[1] delivery id, [2] HTTP status or '' (no answer), [3] delivered at (ISO 8601) or '',
# [4] 'done' or 'retry', [5] next due (retry), [6] the result's metric field
RECORD_ATTEMPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  local raw = redis.call('HGET', KEYS[3], 'webhook')
  local state = {attempts = 0, last_status = cjson.null, delivered_at = cjson.null}
  if raw and raw ~= 'null' then state = cjson.decode(raw) end
  state['attempts'] = (tonumber(state['attempts']) or 0) + 1
  state['last_status'] = cjson.null
  if ARGV[2] ~= '' then state['last_status'] = tonumber(ARGV[2]) end
  if ARGV[3] ~= '' then state['delivered_at'] = ARGV[3] end
  redis.call('HSET', KEYS[3], 'webhook', cjson.encode(state))
end
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
if ARGV[4] == 'done' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'attempts', 1)
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  redis.call('PUBLISH', KEYS[5], KEYS[1])
end
return 1
"""

Result = Literal["delivered", "failed", "gone", "exhausted", "dropped"]


@dataclass(frozen=True)
class Delivery:
    id: str  # the webhook-id, the same on every attempt
    task_id: str
    type: str  # task.started, task.succeeded, task.failed, task.cancelled
    at: float  # epoch seconds of the change
    record: JobRecord | None  # the task as it was then (None: unreadable)
    attempts: int  # made so far


def _decode(delivery_id: str, flat: list[Any]) -> Delivery | None:
    fields = {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    if not fields:
        return None  # done meanwhile (or expired with its task): nothing to send
    try:
        snapshot = json.loads(fields.get("record", "[]"))
        record: JobRecord | None = decode_record(dict(zip(snapshot[::2], snapshot[1::2], strict=True)))
    except (ValueError, TypeError, ValidationError):
        record = None
    return Delivery(
        id=delivery_id,
        task_id=fields.get("task_id", ""),
        type=fields.get("type", ""),
        at=float(fields.get("at", "0")),
        record=record,
        attempts=int(fields.get("attempts", "0")),
    )


class Deliveries:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._take = client.register_script(TAKE_DUE)
        self._record = client.register_script(RECORD_ATTEMPT)

    async def take_due(self, now: float, visible_again_at: float, count: int) -> list[Delivery | str]:
        """Up to ``count`` deliveries due by ``now``, hidden from other dispatchers until
        ``visible_again_at`` (then taken again unless recorded meanwhile). An id alone: its delivery is
        gone (recorded as done elsewhere); ``forget`` it."""
        with translated():
            taken: Any = await self._take(
                keys=[keys.WEBHOOKS_DUE], args=[now, visible_again_at, count, keys.WEBHOOK_PREFIX]
            )
        out: list[Delivery | str] = []
        for raw_id, flat in taken:
            delivery_id = text(raw_id)
            out.append(_decode(delivery_id, flat) or delivery_id)
        return out

    async def forget(self, delivery_id: str) -> None:
        with translated():
            await self._redis.zrem(keys.WEBHOOKS_DUE, delivery_id)

    async def hold(self, delivery_id: str, until: float) -> None:
        """Hidden from other dispatchers until ``until``: its send starts now (it may have waited for its
        receiver's slot since it was taken)."""
        with translated():
            await self._redis.zadd(keys.WEBHOOKS_DUE, {delivery_id: until}, xx=True)

    async def release(self, delivery_ids: list[str]) -> None:
        """Taken but not sent: due again now (those still waiting, that is)."""
        if not delivery_ids:
            return
        now = time.time()
        with translated():
            await self._redis.zadd(keys.WEBHOOKS_DUE, dict.fromkeys(delivery_ids, now), xx=True)
            await self._redis.publish(keys.changes_of(keys.WEBHOOKS_DUE), keys.WEBHOOKS_DUE)

    async def next_due_at(self) -> float | None:
        with translated():
            first: Any = await self._redis.zrange(keys.WEBHOOKS_DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def record(
        self,
        delivery: Delivery,
        *,
        result: Result,
        status: int | None,
        delivered_at: str | None,
        retry_at: float | None,
    ) -> None:
        """One attempt's outcome, on the task (``webhook``) and the results metric; the delivery is
        removed, or due again at ``retry_at``."""
        with translated():
            await self._record(
                keys=[
                    keys.WEBHOOKS_DUE,
                    keys.webhook(delivery.id),
                    keys.job(delivery.task_id),
                    keys.metric(WEBHOOK_DELIVERIES),
                    keys.changes_of(keys.WEBHOOKS_DUE),
                ],
                args=[
                    delivery.id,
                    "" if status is None else status,
                    delivered_at or "",
                    "done" if retry_at is None else "retry",
                    retry_at or 0,
                    json.dumps([result]),
                ],
            )
