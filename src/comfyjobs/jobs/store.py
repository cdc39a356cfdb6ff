"""Reading and writing job records in Redis: the asyncio store of the API, and what it shares with the
workers' blocking one (jobs.worker_store).

Updates go through one Lua script that refuses to touch a record that is missing (expired) or already in
a terminal state, so a late progress message can never turn SUCCESS back into PROGRESS. Every applied
change is appended to the task's event stream in the same script, so the stream and the record cannot
disagree; a change that takes the job out of PENDING also takes it out of its queue's waiting set.
Redis errors become QueueUnavailableError here.
"""

from __future__ import annotations

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
from comfyjobs.jobs import scripts
from comfyjobs.jobs.changes import ChangeHub, Watch
from comfyjobs.jobs.delivery import JobMessages
from comfyjobs.jobs.queue import POSITION, lua
from comfyjobs.jobs.record import (
    JobError,
    JobRecord,
    JobStatus,
    decode_record,
    encode_fields,
    encode_record,
    utc_now,
)
from comfyjobs.tenancy import DEFAULT_TENANT

PREVIEW_TTL_S = 3600  # the latest preview of a job outlives its run by at most this
RUN_TIME_WEIGHT = 0.2  # of the newest run in the moving average of run times

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
    departure (and, when asked for, all its events and its latest preview), all read in one
    transaction: a change after it is always after these ids."""

    record: JobRecord
    last_event_id: EventId | None
    place: QueuePlace
    last_departure: EventId
    events: list[JobEvent] | None = None
    preview: Preview | None = None


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
def translated() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc


def update_args(
    task_id: str, expect: Mapping[str, Any] | None, fields: dict[str, Any], queue_keys: QueueKeys, ticket: str
) -> list[Any]:
    expected = json.dumps(encode_fields(dict(expect))) if expect else ""
    flat: list[Any] = [task_id, expected, time.time(), queue_keys.prefix, ticket]
    for name, value in encode_fields(fields).items():
        flat += [name, value]
    return flat


def _place(found: Any) -> QueuePlace:
    position, waiting = found
    return QueuePlace(position=int(position) if position else None, waiting=int(waiting))


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_events(entries: Any) -> list[JobEvent]:
    """Entries of a job events stream (as XRANGE/XREAD return them) → JobEvents."""
    events = []
    for entry_id, fields in entries:
        raw = json.loads(fields[b"changes"])
        events.append(JobEvent(id=text(entry_id), changes={k: json.loads(v) for k, v in raw.items()}))
    return events


class QueueKeys:
    """The keys one store touches; a store serves one queue."""

    def __init__(self, queue: str, messages: JobMessages) -> None:
        self.queue = queue
        self.prefix = keys.queue_prefix(queue)
        self.seq = keys.queue_seq(queue)
        self.tickets = messages.list_key
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
            self.tickets,
        ]


@dataclass(frozen=True)
class Admission:
    """What became of a new job: created, refused because the queue is full, or an earlier job with
    the same idempotency key (``existing`` is what was stored with that key)."""

    outcome: str  # "created" | "full" | "tenant_full" | "duplicate"
    detail: str = ""


def ticket_for(messages: JobMessages, fields: Mapping[str, Any]) -> str:
    """A ticket goes with a change that puts the job back in line (a worker must come and take it)."""
    return messages.ticket() if fields.get("status") == JobStatus.PENDING else ""


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
        self.queue_name = queue
        self._keys = QueueKeys(queue, messages)
        self._update = client.register_script(scripts.UPDATE_UNLESS_TERMINAL)
        self._admit = client.register_script(scripts.ADMIT)
        self._position_source = lua(POSITION, scripts.DEPARTURES_MAXLEN)
        self._position = client.register_script(self._position_source)
        self._set_if_exists = client.register_script(scripts.SET_IF_EXISTS)

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
            self._keys.seq,
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
            self._messages.ticket(),
            self._keys.prefix,
            record.priority,
        ]
        for name, value in fields.items():
            args += [name, value]
        outcome, detail = await self._call(lambda: self._admit(keys=job_keys, args=args))
        return Admission(outcome=text(outcome), detail=text(detail))

    async def top_up_tickets(self, waiting: int, most: int) -> int:
        """Tickets sent so that at least ``waiting`` are in Celery's list (at most ``most`` more): after
        a ticket was lost (a worker died holding it, Redis lost its last second). Returns how many. A
        ticket too many costs a worker one look at an empty line."""
        queued = int(await self._call(lambda: self._redis.llen(self._messages.list_key)))
        missing = min(max(0, waiting - queued), most)
        if missing:
            tickets = [self._messages.ticket() for _ in range(missing)]
            await self._call(lambda: self._redis.lpush(self._messages.list_key, *tickets))
        return missing

    async def tenant_job_ids(self, tenant: str, before: float | None, limit: int) -> list[tuple[str, float]]:
        """A tenant's task ids with their acceptance time, newest first, accepted before ``before`` (epoch
        s; None: the newest)."""
        top: float | str = "+inf" if before is None else f"({before!r}"
        found: Any = await self._call(
            lambda: self._redis.zrevrangebyscore(
                keys.tenant_jobs(tenant), top, "-inf", start=0, num=limit, withscores=True
            )
        )
        return [(text(task_id), float(score)) for task_id, score in found]

    async def run_times(self) -> dict[str, float]:
        """Workflow id (and "*") -> its jobs' recent run time in seconds."""
        raw = await self._call(lambda: self._redis.hgetall(keys.run_times(self._keys.queue)))
        return {text(k): float(v) for k, v in raw.items()}

    async def get_many(self, task_ids: list[str]) -> list[JobRecord | None]:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hgetall(keys.job(task_id))
                return await pipe.execute()

        return [decode_record(raw) if raw else None for raw in await self._call(run)]

    async def running_ids(self) -> list[str]:
        return [text(t) for t in await self._call(lambda: self._redis.zrange(self._keys.running, 0, -1))]

    async def forget_running(self, task_id: str) -> None:
        await self._call(lambda: self._redis.zrem(self._keys.running, task_id))

    async def waiting_ids(self, before: float) -> list[str]:
        """Jobs waiting since before ``before`` (epoch seconds)."""
        found = await self._call(lambda: self._redis.zrangebyscore(self._keys.waiting, "-inf", before))
        return [text(t) for t in found]

    async def waiting(self) -> int:
        return int(await self._call(lambda: self._redis.zcard(self._keys.waiting)))

    async def get(self, task_id: str) -> JobRecord | None:
        raw = await self._call(lambda: self._redis.hgetall(keys.job(task_id)))
        return decode_record(raw) if raw else None

    async def update(self, task_id: str, *, expect: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        args = update_args(task_id, expect, fields, self._keys, ticket_for(self._messages, fields))
        applied = await self._call(lambda: self._update(keys=self._keys.update(task_id), args=args))
        return int(applied) == 1

    async def cancel(self, task_id: str) -> bool:
        """CANCELLED now, unless it already finished (False then). A queued job leaves the line; a running
        one's worker sees the event and stops its prompt."""
        return await self.update(
            task_id,
            status=JobStatus.CANCELLED,
            finished_at=utc_now(),
            error=JobError(type="cancelled", message="cancelled by request"),
        )

    async def mark_outputs_deleted(self, task_id: str) -> bool:
        """Sets ``outputs_expire_at`` to now on a record, final or not (the outputs are gone: deleted on
        request). Not an event: the task's status did not change. False if the record is gone."""
        fields = encode_fields({"outputs_expire_at": utc_now()})
        done = await self._call(
            lambda: self._set_if_exists(keys=[keys.job(task_id)], args=list(fields.popitem()))
        )
        return int(done) == 1

    async def snapshot(self, task_id: str, *, events: bool = False, preview: bool = False) -> Snapshot | None:
        """One round trip (the position script goes whole, so the transaction needs no SCRIPT EXISTS
        before it); ``events``: all of them too, ``preview``: the latest preview too."""

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.job(task_id))
                pipe.xrevrange(keys.job_events(task_id), count=1)
                pipe.eval(self._position_source, 0, *self._position_args(task_id))
                pipe.xrevrange(self._keys.departures, count=1)
                if events:
                    pipe.xrange(keys.job_events(task_id))
                if preview:
                    pipe.xrevrange(keys.job_previews(task_id), count=1)
                return await pipe.execute()

        raw, last, found, departed, *more = await self._call(run)
        if not raw:
            return None
        all_events = decode_events(more.pop(0)) if events else None
        previews = more.pop(0) if preview else None
        return Snapshot(
            record=decode_record(raw),
            last_event_id=text(last[0][0]) if last else None,
            place=_place(found),
            last_departure=text(departed[0][0]) if departed else "0-0",
            events=all_events,
            preview=_preview(previews[0]) if previews else None,
        )

    def _position_args(self, task_id: str) -> list[str]:
        return [self._keys.prefix, task_id, keys.job(task_id), self._keys.waiting]

    async def place(self, task_id: str) -> QueuePlace:
        """Its place in line, counting priorities and the tenants' turns (jobs.queue): no scan."""
        args = self._position_args(task_id)
        return _place(await self._call(lambda: self._position(keys=[], args=args)))

    async def place_if_waiting(self, record: JobRecord, known: QueuePlace | None = None) -> QueuePlace | None:
        """A waiting job's place in line (``known``, when already read with the record); else None."""
        if record.status != JobStatus.PENDING:
            return None
        return known or await self.place(record.task_id)

    async def exists(self, task_id: str) -> bool:
        return bool(await self._call(lambda: self._redis.exists(keys.job(task_id))))

    @contextmanager
    def watching(self) -> Iterator[Watch]:
        """A watch for ``wait_for_change`` that lasts as long as its reader (an events stream)."""
        if self._hub is None:
            raise RuntimeError("this store has no change hub to wait on")
        with self._hub.watch() as watch:
            yield watch

    async def wait_for_change(
        self,
        task_id: str,
        after: EventId,
        timeout_s: float,
        departures_after: EventId | None = None,
        previews_after: EventId | None = None,
        watch: Watch | None = None,
    ) -> Change:
        """Waits until the task has events after ``after`` or, when ``departures_after`` is given, some
        job left the queue since then, or, when ``previews_after`` is given, a new preview frame came; or
        until ``timeout_s`` (an empty Change). The wait is on the API's one change subscriber (see
        jobs.changes), not on a Redis connection: the streams are read without blocking, when a stream
        is newly watched and when the subscriber says one got an entry. A reader that waits again and
        again passes its ``watch`` (``watching``): a quiet task then costs no Redis read per wait."""
        streams = {keys.job_events(task_id): after}
        if departures_after is not None:
            streams[self._keys.departures] = departures_after
        if previews_after is not None:
            streams[keys.job_previews(task_id)] = previews_after
        deadline = time.monotonic() + timeout_s
        with self.watching() if watch is None else contextlib.nullcontext(watch) as watched:
            look = watched.follow(streams)  # registered before the read: nothing slips between
            while True:
                if not (look or await watched.wait(deadline - time.monotonic())):
                    return Change()
                change = await self._read(task_id, streams)
                if not change.empty:
                    return change
                look = False  # woken for entries already read (or by a reconnection): wait on

    async def _read(self, task_id: str, streams: dict[str, EventId]) -> Change:
        replies: Any = await self._call(lambda: self._redis.xread(streams))  # type: ignore[arg-type]
        change = Change()
        for stream, entries in replies or []:
            name = text(stream)
            if name == self._keys.departures:
                change.departed = text(entries[-1][0])
            elif name == keys.job_previews(task_id):
                change.preview = _preview(entries[-1])
            else:
                change.events = decode_events(entries)
        return change


def _preview(entry: Any) -> Preview:
    entry_id, fields = entry
    return Preview(id=text(entry_id), jpeg=bytes(fields[b"jpeg"]))
