"""Reading and writing job records in Redis: a blocking store for workers, an asyncio one for the API.

Updates go through one Lua script that refuses to touch a record that is missing (expired) or already in
a terminal state, so a late progress message can never turn SUCCESS back into PROGRESS. Every applied
change is appended to the task's event stream in the same script, so the stream and the record cannot
disagree; a change that takes the job out of PENDING also takes it out of its queue's waiting set.
Redis errors become QueueUnavailableError here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import (
    TERMINAL_STATUSES,
    JobRecord,
    JobStatus,
    decode_record,
    encode_fields,
    encode_record,
)

DEPARTURES_MAXLEN = 1000  # readers only need "someone left since I looked", not the history

# KEYS[1] job hash, KEYS[2] job events stream, KEYS[3] queue waiting set, KEYS[4] queue departures
# ARGV[1] task id, then field, value, field, value, ...
_UPDATE_UNLESS_TERMINAL = (
    """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local terminal = {$TERMINAL}
for _, s in ipairs(terminal) do
  if status == s then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local changes = {}
for i = 2, #ARGV, 2 do changes[ARGV[i]] = ARGV[i + 1] end
redis.call('XADD', KEYS[2], '*', 'changes', cjson.encode(changes))
if changes['status'] and changes['status'] ~= $PENDING then
  if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', $DEPARTURES_MAXLEN, '*', 'task_id', ARGV[1])
  end
end
return 1
"""
    # Status values are stored JSON-encoded ("\"SUCCESS\""), and written here as Lua string literals.
    .replace("$TERMINAL", ", ".join(json.dumps(json.dumps(s.value)) for s in TERMINAL_STATUSES))
    .replace("$PENDING", json.dumps(json.dumps(JobStatus.PENDING.value)))
    .replace("$DEPARTURES_MAXLEN", str(DEPARTURES_MAXLEN))
)

T = TypeVar("T")

EventId = str
"""A stream entry id ("1700000000000-0"): orders a task's events, and is the SSE id clients resume from."""


@dataclass(frozen=True)
class JobEvent:
    id: EventId
    changes: dict[str, Any]  # record fields as applied, decoded from JSON


@dataclass(frozen=True)
class QueuePlace:
    position: int | None  # 1 = the next job a worker takes; None once a worker took it
    waiting: int  # jobs waiting on the queue in all


@dataclass(frozen=True)
class Snapshot:
    """A record, the id of the last event it reflects, its place in the queue and the queue's last
    departure, all read in one transaction: a change after it is always after these ids."""

    record: JobRecord
    last_event_id: EventId | None
    place: QueuePlace
    last_departure: EventId


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc


def _flatten(task_id: str, fields: dict[str, Any]) -> list[str]:
    flat = [task_id]
    for name, value in encode_fields(fields).items():
        flat += [name, value]
    return flat


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_events(entries: Any) -> list[JobEvent]:
    events = []
    for entry_id, fields in entries:
        raw = json.loads(fields[b"changes"])
        events.append(JobEvent(id=_text(entry_id), changes={k: json.loads(v) for k, v in raw.items()}))
    return events


class _Keys:
    """The keys one store touches; a store serves one queue."""

    def __init__(self, queue: str) -> None:
        self.waiting = keys.queue_waiting(queue)
        self.departures = keys.queue_departures(queue)

    def update(self, task_id: str) -> list[str]:
        return [keys.job(task_id), keys.job_events(task_id), self.waiting, self.departures]


def _queue_create(pipe: Any, record: JobRecord, ttl_s: int, waiting_key: str) -> None:
    """Queues the commands that create a record; the same calls work on a blocking or asyncio pipeline."""
    fields = encode_record(record)
    pipe.hset(keys.job(record.task_id), mapping=fields)
    pipe.expire(keys.job(record.task_id), ttl_s)
    pipe.xadd(keys.job_events(record.task_id), {"changes": json.dumps(fields)})
    pipe.expire(keys.job_events(record.task_id), ttl_s)
    pipe.zadd(waiting_key, {record.task_id: record.created_at.timestamp()})


class JobStore:
    """Blocking store, for workers (which run one job at a time in a plain thread)."""

    def __init__(self, client: redis.Redis, ttl_s: int, queue: str) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._keys = _Keys(queue)
        self._update = client.register_script(_UPDATE_UNLESS_TERMINAL)

    def create(self, record: JobRecord) -> None:
        with _translated(), self._redis.pipeline(transaction=True) as pipe:
            _queue_create(pipe, record, self._ttl_s, self._keys.waiting)
            pipe.execute()

    def get(self, task_id: str) -> JobRecord | None:
        with _translated():
            raw = self._redis.hgetall(keys.job(task_id))
        return decode_record(raw) if raw else None

    def update(self, task_id: str, **fields: Any) -> bool:
        """Applies ``fields`` unless the record is gone or terminal; True if applied."""
        with _translated():
            applied = self._update(keys=self._keys.update(task_id), args=_flatten(task_id, fields))
        return int(applied) == 1

    def forget_waiting(self, task_id: str) -> None:
        """Drops a task whose record is gone from the waiting set (a delivery of an expired job)."""
        with _translated():
            self._redis.zrem(self._keys.waiting, task_id)


class AsyncJobStore:
    """The same operations for the API's event loop (redis.asyncio: no blocking call on the loop), and
    the reads behind the events stream and the long poll."""

    def __init__(
        self, client: aioredis.Redis, ttl_s: int, queue: str, waiting_client: aioredis.Redis | None = None
    ) -> None:
        self._redis = client
        # Blocking reads (XREAD BLOCK) need a connection whose socket timeout outlasts the block;
        # the main client keeps a short one so a hung Redis fails ordinary requests fast.
        self._waiting_redis = waiting_client or client
        self._ttl_s = ttl_s
        self._keys = _Keys(queue)
        self._update = client.register_script(_UPDATE_UNLESS_TERMINAL)

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc

    async def create(self, record: JobRecord) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                _queue_create(pipe, record, self._ttl_s, self._keys.waiting)
                await pipe.execute()

        await self._call(run)

    async def get(self, task_id: str) -> JobRecord | None:
        raw = await self._call(lambda: self._redis.hgetall(keys.job(task_id)))
        return decode_record(raw) if raw else None

    async def delete(self, task_id: str) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.job(task_id), keys.job_events(task_id))
                pipe.zrem(self._keys.waiting, task_id)
                await pipe.execute()

        await self._call(run)

    async def update(self, task_id: str, **fields: Any) -> bool:
        applied = await self._call(
            lambda: self._update(keys=self._keys.update(task_id), args=_flatten(task_id, fields))
        )
        return int(applied) == 1

    async def snapshot(self, task_id: str) -> Snapshot | None:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.job(task_id))
                pipe.xrevrange(keys.job_events(task_id), count=1)
                pipe.zrank(self._keys.waiting, task_id)
                pipe.zcard(self._keys.waiting)
                pipe.xrevrange(self._keys.departures, count=1)
                return await pipe.execute()

        raw, last, rank, waiting, departed = await self._call(run)
        if not raw:
            return None
        return Snapshot(
            record=decode_record(raw),
            last_event_id=_text(last[0][0]) if last else None,
            place=QueuePlace(position=None if rank is None else int(rank) + 1, waiting=int(waiting)),
            last_departure=_text(departed[0][0]) if departed else "0-0",
        )

    async def place(self, task_id: str) -> QueuePlace:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrank(self._keys.waiting, task_id)
                pipe.zcard(self._keys.waiting)
                return await pipe.execute()

        rank, waiting = await self._call(run)
        return QueuePlace(position=None if rank is None else int(rank) + 1, waiting=int(waiting))

    async def events(self, task_id: str, after: EventId | None = None) -> list[JobEvent]:
        """The task's events in order, all of them or those after ``after``."""
        start = "-" if after is None else f"({after}"
        entries = await self._call(lambda: self._redis.xrange(keys.job_events(task_id), min=start))
        return _decode_events(entries)

    async def last_departure(self) -> EventId:
        entries = await self._call(lambda: self._redis.xrevrange(self._keys.departures, count=1))
        return _text(entries[0][0]) if entries else "0-0"

    async def wait_for_change(
        self, task_id: str, after: EventId, timeout_s: float, departures_after: EventId | None = None
    ) -> tuple[list[JobEvent], EventId | None]:
        """Blocks (in Redis, not here) until the task has events after ``after`` or, when
        ``departures_after`` is given, some job left the queue since then; or until ``timeout_s``.
        Returns the new events and the newest departure id seen (None if none)."""
        streams = {keys.job_events(task_id): after}
        if departures_after is not None:
            streams[self._keys.departures] = departures_after
        block_ms = max(1, int(timeout_s * 1000))
        replies: Any = await self._call(
            lambda: self._waiting_redis.xread(streams, block=block_ms)  # type: ignore[arg-type]
        )
        events: list[JobEvent] = []
        departed: EventId | None = None
        for stream, entries in replies or []:
            if _text(stream) == self._keys.departures:
                departed = _text(entries[-1][0])
            else:
                events = _decode_events(entries)
        return events, departed
