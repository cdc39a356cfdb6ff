"""Reading and writing job records in Redis: a blocking store for workers, an asyncio one for the API.

Updates go through one Lua script that refuses to touch a record that is missing (expired) or already in
a terminal state, so a late progress message can never turn SUCCESS back into PROGRESS. Every applied
change is also published on the task's events channel. Redis errors become QueueUnavailableError here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import (
    TERMINAL_STATUSES,
    JobRecord,
    decode_record,
    encode_fields,
    encode_record,
)

# KEYS[1] job hash, KEYS[2] events channel; ARGV: field, value, field, value, ...
_UPDATE_UNLESS_TERMINAL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local terminal = {%s}
for _, s in ipairs(terminal) do
  if status == s then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV))
local changes = {}
for i = 1, #ARGV, 2 do changes[ARGV[i]] = ARGV[i + 1] end
redis.call('PUBLISH', KEYS[2], cjson.encode(changes))
return 1
""" % ", ".join(json.dumps(json.dumps(s.value)) for s in TERMINAL_STATUSES)  # noqa: UP031 - Lua braces

T = TypeVar("T")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc


def _flatten(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in encode_fields(fields).items():
        flat += [name, value]
    return flat


class JobStore:
    """Blocking store, for workers (which run one job at a time in a plain thread)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._update = client.register_script(_UPDATE_UNLESS_TERMINAL)

    def create(self, record: JobRecord) -> None:
        with _translated(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.job(record.task_id), mapping=encode_record(record))  # type: ignore[arg-type]
            pipe.expire(keys.job(record.task_id), self._ttl_s)
            pipe.execute()

    def get(self, task_id: str) -> JobRecord | None:
        with _translated():
            raw = self._redis.hgetall(keys.job(task_id))
        return decode_record(raw) if raw else None

    def update(self, task_id: str, **fields: Any) -> bool:
        """Applies ``fields`` unless the record is gone or terminal; True if applied."""
        with _translated():
            applied = self._update(keys=[keys.job(task_id), keys.job_events(task_id)], args=_flatten(fields))
        return int(applied) == 1


class AsyncJobStore:
    """The same operations for the API's event loop (redis.asyncio: no blocking call on the loop)."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._update = client.register_script(_UPDATE_UNLESS_TERMINAL)

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc

    async def create(self, record: JobRecord) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.job(record.task_id), mapping=encode_record(record))  # type: ignore[arg-type]
                pipe.expire(keys.job(record.task_id), self._ttl_s)
                await pipe.execute()

        await self._call(run)

    async def get(self, task_id: str) -> JobRecord | None:
        raw = await self._call(lambda: self._redis.hgetall(keys.job(task_id)))
        return decode_record(raw) if raw else None

    async def delete(self, task_id: str) -> None:
        await self._call(lambda: self._redis.delete(keys.job(task_id)))

    async def update(self, task_id: str, **fields: Any) -> bool:
        applied = await self._call(
            lambda: self._update(keys=[keys.job(task_id), keys.job_events(task_id)], args=_flatten(fields))
        )
        return int(applied) == 1
