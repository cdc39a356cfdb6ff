"""Reading and writing job records in Redis: a blocking store for workers, an asyncio one for the API.

Updates go through one Lua script that refuses to touch a record that is missing (expired) or already in
a terminal state, so a late progress message can never turn SUCCESS back into PROGRESS. Every applied
change is appended to the task's event stream in the same script, so the stream and the record cannot
disagree; a change that takes the job out of PENDING also takes it out of its queue's waiting set.
Redis errors become QueueUnavailableError here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.changes import ChangeHub
from comfyjobs.jobs.delivery import JobMessages
from comfyjobs.jobs.record import (
    TERMINAL_STATUSES,
    JobRecord,
    JobStatus,
    decode_record,
    encode_fields,
    encode_record,
    utc_now,
)
from comfyjobs.tenancy import DEFAULT_TENANT

DEPARTURES_MAXLEN = 1000  # readers only need "someone left since I looked", not the history
PREVIEW_TTL_S = 3600  # the latest preview of a job outlives its run by at most this

# KEYS[1] job hash, [2] job events stream, [3] queue waiting set, [4] queue departures, [5] running set,
# [6] waiting-by-tenant set
# ARGV[1] task id, [2] fields the record must hold (JSON object of encoded values) or "", [3] now (score),
# then field, value, field, value, ...
_UPDATE_UNLESS_TERMINAL = (
    """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local terminal = {$TERMINAL}
local function is_terminal(s)
  for _, t in ipairs(terminal) do if s == t then return true end end
  return false
end
if is_terminal(status) then return 0 end
if ARGV[2] ~= '' then
  for name, value in pairs(cjson.decode(ARGV[2])) do
    if redis.call('HGET', KEYS[1], name) ~= value then return 0 end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local changes = {}
for i = 4, #ARGV, 2 do changes[ARGV[i]] = ARGV[i + 1] end
redis.call('XADD', KEYS[2], '*', 'changes', cjson.encode(changes))
redis.call('PUBLISH', $CHANGES, KEYS[2])
local new = changes['status']
local by_tenant = (redis.call('HGET', KEYS[1], 'tenant') or 'null') .. '|' .. ARGV[1]
if new == $PENDING then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[6], 0, by_tenant)
  redis.call('ZREM', KEYS[5], ARGV[1])
elseif new then
  if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', $DEPARTURES_MAXLEN, '*', 'task_id', ARGV[1])
    redis.call('PUBLISH', $CHANGES, KEYS[4])
  end
  redis.call('ZREM', KEYS[6], by_tenant)
  if new == $STARTED or new == $PROGRESS then
    redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[1])
  elseif is_terminal(new) then
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
end
return 1
"""
    # Status values are stored JSON-encoded ("\"SUCCESS\""), and written here as Lua string literals.
    .replace("$TERMINAL", ", ".join(json.dumps(json.dumps(s.value)) for s in TERMINAL_STATUSES))
    .replace("$PENDING", json.dumps(json.dumps(JobStatus.PENDING.value)))
    .replace("$STARTED", json.dumps(json.dumps(JobStatus.STARTED.value)))
    .replace("$PROGRESS", json.dumps(json.dumps(JobStatus.PROGRESS.value)))
    .replace("$DEPARTURES_MAXLEN", str(DEPARTURES_MAXLEN))
    .replace("$CHANGES", json.dumps(keys.CHANGES))
)

# KEYS[1] lease; ARGV[1] owner, ARGV[2] ttl in ms (renew) — only the owner may renew or release.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

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


@dataclass(frozen=True)
class Preview:
    id: EventId
    jpeg: bytes


@dataclass
class Change:
    """What a wait saw: the task's new events, the newest departure from its queue, its newest preview."""

    events: list[JobEvent] = field(default_factory=list)
    departed: EventId | None = None
    preview: Preview | None = None

    @property
    def empty(self) -> bool:
        return not self.events and self.departed is None and self.preview is None


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc


def _update_args(task_id: str, expect: Mapping[str, Any] | None, fields: dict[str, Any]) -> list[Any]:
    expected = json.dumps(encode_fields(dict(expect))) if expect else ""
    flat: list[Any] = [task_id, expected, time.time()]
    for name, value in encode_fields(fields).items():
        flat += [name, value]
    return flat


def _place(rank: Any, waiting: Any) -> QueuePlace:
    return QueuePlace(position=None if rank is None else int(rank) + 1, waiting=int(waiting))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_events(entries: Any) -> list[JobEvent]:
    """Entries of a job events stream (as XRANGE/XREAD return them) → JobEvents."""
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
        self.running = keys.queue_running(queue)

        self.by_tenant = keys.queue_waiting_by_tenant(queue)

    def update(self, task_id: str) -> list[str]:
        return [
            keys.job(task_id),
            keys.job_events(task_id),
            self.waiting,
            self.departures,
            self.running,
            self.by_tenant,
        ]


# KEYS[1] job hash, KEYS[2] job events stream, KEYS[3] queue waiting set, KEYS[4] idempotency key or "",
# KEYS[5] waiting-by-tenant set, KEYS[6] the queue's Celery list, KEYS[7] the tenant's jobs
# ARGV[1] task id, [2] ttl_s, [3] score, [4] max waiting (0: no limit), [5] idempotency value,
# [6] the creation event's JSON, [7] the tenant (JSON), [8] max waiting per tenant (0: no limit),
# [9] the job's Celery message, then field, value, ...
_ADMIT = """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'duplicate', existing} end
end
local waiting = redis.call('ZCARD', KEYS[3])
if tonumber(ARGV[4]) > 0 and waiting >= tonumber(ARGV[4]) then return {'full', tostring(waiting)} end
if tonumber(ARGV[8]) > 0 then
  local mine = redis.call('ZLEXCOUNT', KEYS[5], '[' .. ARGV[7] .. '|', '[' .. ARGV[7] .. '|\255')
  if mine >= tonumber(ARGV[8]) then return {'tenant_full', tostring(mine)} end
end
redis.call('ZADD', KEYS[5], 0, ARGV[7] .. '|' .. ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'changes', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', $CHANGES, KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[2]) end
redis.call('LPUSH', KEYS[6], ARGV[9])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[7], ARGV[2])
return {'created', ''}
""".replace("$CHANGES", json.dumps(keys.CHANGES))


_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Admission:
    """What became of a new job: created, refused because the queue is full, or an earlier job with
    the same idempotency key (``existing`` is what was stored with that key)."""

    outcome: str  # "created" | "full" | "tenant_full" | "duplicate"
    detail: str = ""


class JobStore:
    """Blocking store, for workers (which run one job at a time in a plain thread)."""

    def __init__(self, client: redis.Redis, ttl_s: int, queue: str) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._keys = _Keys(queue)
        self._update = client.register_script(_UPDATE_UNLESS_TERMINAL)
        self._renew = client.register_script(_RENEW_LEASE)
        self._release = client.register_script(_RELEASE_LEASE)

    def get(self, task_id: str) -> JobRecord | None:
        with _translated():
            raw = self._redis.hgetall(keys.job(task_id))
        return decode_record(raw) if raw else None

    def update(self, task_id: str, *, expect: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        """Applies ``fields`` unless the record is gone or terminal, or does not hold ``expect`` (e.g. the
        attempt and worker a writer started as: a worker whose job was taken back, or taken over by a
        later attempt, cannot write over it). True if applied."""
        args = _update_args(task_id, expect, fields)
        with _translated():
            applied = self._update(keys=self._keys.update(task_id), args=args)
        return int(applied) == 1

    def read_events(self, task_id: str, after: EventId, block_s: float) -> list[JobEvent]:
        """The task's events after ``after``, waiting up to ``block_s`` (in Redis) for the first."""
        with _translated():
            replies: Any = self._redis.xread({keys.job_events(task_id): after}, block=int(block_s * 1000))
        return [event for _, entries in replies or [] for event in decode_events(entries)]

    def acquire_lease(self, task_id: str, owner: str, ttl_s: float) -> bool:
        with _translated():
            return bool(self._redis.set(keys.job_lease(task_id), owner, nx=True, px=int(ttl_s * 1000)))

    def renew_lease(self, task_id: str, owner: str, ttl_s: float) -> bool:
        with _translated():
            return int(self._renew(keys=[keys.job_lease(task_id)], args=[owner, int(ttl_s * 1000)])) == 1

    def release_lease(self, task_id: str, owner: str) -> None:
        with _translated():
            self._release(keys=[keys.job_lease(task_id)], args=[owner])

    def publish_preview(self, task_id: str, jpeg: bytes) -> None:
        """The job's latest preview frame: replaces the one before (the stream keeps one entry)."""
        key = keys.job_previews(task_id)
        with _translated(), self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"jpeg": jpeg}, maxlen=1, approximate=False)
            pipe.expire(key, PREVIEW_TTL_S)
            pipe.publish(keys.CHANGES, key)
            pipe.execute()

    def forget_waiting(self, task_id: str) -> None:
        """Drops a task whose record is gone from the waiting set (a delivery of an expired job)."""
        with _translated():
            self._redis.zrem(self._keys.waiting, task_id)


class AsyncJobStore:
    """The same operations for the API's event loop (redis.asyncio: no blocking call on the loop), and
    the reads behind the events stream and the long poll."""

    def __init__(
        self,
        client: aioredis.Redis,
        ttl_s: int,
        queue: str,
        messages: JobMessages,
        hub: ChangeHub | None = None,
    ) -> None:
        self._redis = client
        self._messages = messages
        self._hub = hub  # what waits for changes (wait_for_change); readers that never wait need none
        self._ttl_s = ttl_s
        self._keys = _Keys(queue)
        self._update = client.register_script(_UPDATE_UNLESS_TERMINAL)
        self._admit = client.register_script(_ADMIT)
        self._set_if_exists = client.register_script(_SET_IF_EXISTS)

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc

    async def admit(
        self,
        record: JobRecord,
        *,
        max_waiting: int = 0,
        max_waiting_per_tenant: int = 0,
        idempotency_key: str | None = None,
        idempotency_value: str = "",
    ) -> Admission:
        """Creates the record, puts it in line and sends its message, in one script: unless
        ``idempotency_key`` was used before by the record's tenant (then nothing is created), or
        ``max_waiting`` jobs already wait (0: no limit)."""
        fields = encode_record(record)
        idem = keys.idempotency(record.tenant or "", idempotency_key) if idempotency_key else ""
        job_keys = [
            keys.job(record.task_id),
            keys.job_events(record.task_id),
            self._keys.waiting,
            idem,
            self._keys.by_tenant,
            self._messages.list_key,
            keys.tenant_jobs(record.tenant or DEFAULT_TENANT),
        ]
        args: list[Any] = [
            record.task_id,
            self._ttl_s,
            record.created_at.timestamp(),
            max_waiting,
            idempotency_value,
            json.dumps(fields),
            fields["tenant"],
            max_waiting_per_tenant,
            self._messages.message(record.task_id),
        ]
        for name, value in fields.items():
            args += [name, value]
        outcome, detail = await self._call(lambda: self._admit(keys=job_keys, args=args))
        return Admission(outcome=_text(outcome), detail=_text(detail))

    async def send(self, task_id: str) -> None:
        """Sends the job's message again (the reconciler, for a job put back in line or whose message
        was lost)."""
        message = self._messages.message(task_id)
        await self._call(lambda: self._redis.lpush(self._messages.list_key, message))

    async def tenant_job_ids(self, tenant: str, before: float | None, limit: int) -> list[tuple[str, float]]:
        """A tenant's task ids with their acceptance time, newest first, accepted before ``before`` (epoch
        s; None: the newest)."""
        top: float | str = "+inf" if before is None else f"({before!r}"
        found: Any = await self._call(
            lambda: self._redis.zrevrangebyscore(
                keys.tenant_jobs(tenant), top, "-inf", start=0, num=limit, withscores=True
            )
        )
        return [(_text(task_id), float(score)) for task_id, score in found]

    async def get_many(self, task_ids: list[str]) -> list[JobRecord | None]:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hgetall(keys.job(task_id))
                return await pipe.execute()

        return [decode_record(raw) if raw else None for raw in await self._call(run)]

    async def running_ids(self) -> list[str]:
        return [_text(t) for t in await self._call(lambda: self._redis.zrange(self._keys.running, 0, -1))]

    async def forget_running(self, task_id: str) -> None:
        await self._call(lambda: self._redis.zrem(self._keys.running, task_id))

    async def waiting_ids(self, before: float) -> list[str]:
        """Jobs waiting since before ``before`` (epoch seconds)."""
        found = await self._call(lambda: self._redis.zrangebyscore(self._keys.waiting, "-inf", before))
        return [_text(t) for t in found]

    async def waiting(self) -> int:
        return int(await self._call(lambda: self._redis.zcard(self._keys.waiting)))

    async def get(self, task_id: str) -> JobRecord | None:
        raw = await self._call(lambda: self._redis.hgetall(keys.job(task_id)))
        return decode_record(raw) if raw else None

    async def update(self, task_id: str, *, expect: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        args = _update_args(task_id, expect, fields)
        applied = await self._call(lambda: self._update(keys=self._keys.update(task_id), args=args))
        return int(applied) == 1

    async def mark_outputs_deleted(self, task_id: str) -> bool:
        """Sets ``outputs_expire_at`` to now on a record, final or not (the outputs are gone: deleted on
        request). Not an event: the task's status did not change. False if the record is gone."""
        fields = encode_fields({"outputs_expire_at": utc_now()})
        done = await self._call(
            lambda: self._set_if_exists(keys=[keys.job(task_id)], args=list(fields.popitem()))
        )
        return int(done) == 1

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
            place=_place(rank, waiting),
            last_departure=_text(departed[0][0]) if departed else "0-0",
        )

    async def place(self, task_id: str) -> QueuePlace:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrank(self._keys.waiting, task_id)
                pipe.zcard(self._keys.waiting)
                return await pipe.execute()

        return _place(*await self._call(run))

    async def events(self, task_id: str) -> list[JobEvent]:
        """All the task's events, in order."""
        return decode_events(await self._call(lambda: self._redis.xrange(keys.job_events(task_id))))

    async def exists(self, task_id: str) -> bool:
        return bool(await self._call(lambda: self._redis.exists(keys.job(task_id))))

    async def last_departure(self) -> EventId:
        entries = await self._call(lambda: self._redis.xrevrange(self._keys.departures, count=1))
        return _text(entries[0][0]) if entries else "0-0"

    async def latest_preview(self, task_id: str) -> Preview | None:
        entries = await self._call(lambda: self._redis.xrevrange(keys.job_previews(task_id), count=1))
        return _preview(entries[0]) if entries else None

    async def wait_for_change(
        self,
        task_id: str,
        after: EventId,
        timeout_s: float,
        departures_after: EventId | None = None,
        previews_after: EventId | None = None,
    ) -> Change:
        """Waits until the task has events after ``after`` or, when ``departures_after`` is given, some
        job left the queue since then, or, when ``previews_after`` is given, a new preview frame came; or
        until ``timeout_s``. The wait is on the API's one change subscriber (see jobs.changes), not on a
        Redis connection: the streams are read without blocking before and after it."""
        streams = {keys.job_events(task_id): after}
        if departures_after is not None:
            streams[self._keys.departures] = departures_after
        if previews_after is not None:
            streams[keys.job_previews(task_id)] = previews_after
        if self._hub is None:
            raise RuntimeError("this store has no change hub to wait on")
        with self._hub.watch(streams) as woken:
            change = await self._read(task_id, streams)  # registered first: nothing slips between
            if change.empty:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout_s)
                    change = await self._read(task_id, streams)
        return change

    async def _read(self, task_id: str, streams: dict[str, EventId]) -> Change:
        replies: Any = await self._call(lambda: self._redis.xread(streams))  # type: ignore[arg-type]
        change = Change()
        for stream, entries in replies or []:
            name = _text(stream)
            if name == self._keys.departures:
                change.departed = _text(entries[-1][0])
            elif name == keys.job_previews(task_id):
                change.preview = _preview(entries[-1])
            else:
                change.events = decode_events(entries)
        return change


def _preview(entry: Any) -> Preview:
    entry_id, fields = entry
    return Preview(id=_text(entry_id), jpeg=bytes(fields[b"jpeg"]))
