"""The blocking job store of the workers (a plain thread per job): take a job, update its record, hold its
lease, publish its previews. It shares the scripts and keys of the API's store (jobs.store)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import redis
from redis.commands.core import Script

from comfyjobs import keys, metrics
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs import scripts
from comfyjobs.jobs.delivery import JobMessages
from comfyjobs.jobs.queue import ADOPT, Affinity, lua
from comfyjobs.jobs.record import JobRecord, JobStatus, decode_record, encode_fields, utc_now
from comfyjobs.jobs.store import (
    PREVIEW_TTL_S,
    RUN_TIME_WEIGHT,
    EventId,
    JobEvent,
    QueueKeys,
    decode_events,
    text,
    ticket_for,
    translated,
    update_args,
)


class JobTimes(NamedTuple):
    """A job's times, for the ETAs (api.eta) and the metrics: its wait in line (first attempts), its run
    in ComfyUI (successes) and each node's execution."""

    workflow_id: str
    queue_wait_s: float | None
    run_s: float | None
    node_times: list[tuple[str, float]]


log = logging.getLogger(__name__)

TicketWait = Literal["taken", "timeout", "not_a_ticket"]
ObjectExpiry = tuple[str, float]  # an object's key or prefix, and when it goes (epoch s)


class Batch:
    """Commands sent in one round trip (a pipeline, no transaction), run in order. Scripts go whole
    (EVAL; Redis keeps them compiled): redis-py's own pipeline asks SCRIPT EXISTS before each execute, a
    round trip of its own, and by sha a script Redis forgot (it restarted) would fail while the ones
    after it ran, out of order."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=False)  # for plain commands

    def script(self, source: str, keys_: list[str], args: list[Any]) -> int:
        """Adds a script's run (its Lua ``source``); returns the index of its reply."""
        index = len(self.pipe)
        self.pipe.eval(source, len(keys_), *keys_, *args)
        return index

    def stored_script(self, script: Script, keys_: list[str], args: list[Any]) -> int:
        """Adds a registered script's run by its sha (for a long script, put last: a Redis that forgot it
        fails this one alone, with NoScriptError as its reply); returns the index of its reply."""
        index = len(self.pipe)
        self.pipe.evalsha(script.sha, len(keys_), *keys_, *args)
        return index

    def expire(self, expiry: ObjectExpiry, *, only_later: bool = True) -> None:
        """Schedules the deletion of stored objects (a key, or a prefix and all under it) for the
        retention sweep (storage.retention); ``only_later``: never brings a later one forward."""
        key, at_s = expiry
        self.pipe.zadd(keys.OBJECT_EXPIRY, {key: at_s}, gt=only_later)

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """The replies, in order; raises the first error, or (``raise_on_error`` False) returns errors as
        their commands' replies. A connection lost raises either way (QueueUnavailableError)."""
        with translated(), self.pipe:
            replies: list[Any] = self.pipe.execute(raise_on_error=raise_on_error)
        return replies


class Start(NamedTuple):
    """A take that starts the job it takes (``JobStore.take``): at most ``max_attempts`` attempts, its
    outputs' deletion (under ``outputs_prefix``, a format of the task id) scheduled for ``outputs_expire_at``
    (epoch s) or later."""

    max_attempts: int
    outputs_prefix: str
    outputs_expire_at: float


class Take(NamedTuple):
    """What ``JobStore.take`` takes, and how (see there)."""

    owner: str
    lease_s: float
    affinity: Affinity | None = None
    with_ticket: bool = False
    start: Start | None = None
    # The job classes ("<workflow>@<catalog version>") the taker can run; None: any (jobs.queue CLAIM).
    runs: frozenset[str] | None = None


class Blocked(NamedTuple):
    """A take's finding: jobs wait, but none of a class the taker can run. A ticket it held is handed on
    (``JobStore.take``): it is another worker's to use."""


class Claimed(NamedTuple):
    """A job taken from the line, and its record as it was then (None: it expired meanwhile);
    ``started_event``: the id of its STARTED event, when the take started it too (None: it did not)."""

    task_id: str
    record: JobRecord | None
    started_event: EventId | None = None

    @property
    def started(self) -> bool:
        return self.started_event is not None


class Finished(NamedTuple):
    """A job's end (``JobStore.finish``): whether its outcome was written; whether the take asked for
    with it was made (``took``), and what it found (``taken``; None: nothing waits)."""

    written: bool
    taken: Claimed | Blocked | None = None
    took: bool = False


def _claimed(taken: Any) -> Claimed | Blocked | None:
    """A take's reply (jobs.scripts ``CLAIM``)."""
    if not taken:
        return None
    if isinstance(taken, bytes | str):  # (the one reply that is not a job's)
        return Blocked()
    task_id, flat = text(taken[0]), taken[1]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    started_event = text(taken[3]) if taken[2] else None
    return Claimed(task_id, decode_record(fields) if fields else None, started_event)


class JobStore:
    """Blocking store, for workers (a plain thread per job)."""

    def __init__(self, client: redis.Redis, ttl_s: int, queue: str, messages: JobMessages) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._messages = messages
        self._keys = QueueKeys(queue, messages)
        self._claim = client.register_script(scripts.CLAIM)
        self._adopt = client.register_script(lua(ADOPT, scripts.DEPARTURES_MAXLEN))
        self._acquire = client.register_script(scripts.ACQUIRE_LEASE)
        self._release = client.register_script(scripts.RELEASE_LEASE)

    def adopt_earlier_jobs(self) -> int:
        """Puts jobs an earlier version put in line (before class lanes) in their class lanes too, so
        takes see them; once per worker start, O(waiting jobs). Returns how many it found."""
        with translated():
            return int(self._adopt(keys=[], args=[self._keys.prefix, keys.job("")]))

    def take(self, take: Take) -> Claimed | Blocked | None:
        """Takes the next job in line (priority, then tenants in turn, then model affinity; see
        jobs.queue) with its lease in ``take.owner``'s name, and reads its record in the same step; None
        when none waits. ``take.with_ticket``: the taker holds no ticket for this take (it goes on from a
        job it finished), so one of the line's tickets is taken with the job. ``take.start``: the same
        step starts the job (STARTED by the owner, one more attempt, no error), unless its record is gone,
        finished or out of attempts (``Claimed.started`` says which). ``take.runs``: only jobs of those
        classes are taken; Blocked when others wait, and then a ticket the taker held is sent again."""
        with translated():
            claimed = _claimed(self._claim(keys=[], args=self._take_args(take)))
        if isinstance(claimed, Blocked) and not take.with_ticket:
            self.send_ticket()
        return claimed

    def _take_args(self, take: Take) -> list[str | int | float]:
        k, a, m = self._keys, take.affinity or Affinity(), self._messages
        now = time.time()
        args: list[str | int | float] = [
            k.prefix, take.owner, int(take.lease_s * 1000), keys.LEASE_PREFIX, k.departures, k.waiting,
            k.by_tenant, keys.job(""), json.dumps(sorted(a.loaded)), a.max_skip, a.max_wait_s, now,
            k.running, m.list_key if take.with_ticket else "", m.ticket_prefix,
        ]  # fmt: skip
        start = take.start
        if start is not None:
            starting = {
                "status": JobStatus.STARTED, "started_at": utc_now(), "worker": take.owner, "error": None
            }  # fmt: skip
            args += [
                start.max_attempts, keys.job_events(""), json.dumps(encode_fields(starting)),
                keys.OBJECT_EXPIRY, start.outputs_prefix, start.outputs_expire_at,
            ]  # fmt: skip
        else:
            args += [0, "", "{}", "", "", 0]  # (take only)
        runs = "" if take.runs is None else json.dumps(sorted(take.runs))
        return [*args, runs, json.dumps(sorted(a.on_disk)), json.dumps(sorted(a.lacking))]

    def record_times(self, times: JobTimes) -> None:
        """A job's times, in one round trip."""
        batch = Batch(self._redis)
        self._add_times(batch, times)
        batch.execute()

    def _add_times(self, batch: Batch, times: JobTimes) -> None:
        """A successful run's time into the moving averages the ETAs use, and each time into its metric's
        histogram (see comfyjobs.metrics), in one script."""
        observed: list[str | float] = []
        if times.queue_wait_s is not None:
            observed += metrics.QUEUE_WAIT.observation((times.workflow_id,), times.queue_wait_s)
        if times.run_s is not None:
            observed += metrics.RUN_TIME.observation((times.workflow_id,), times.run_s)
        for node_class, seconds in times.node_times:
            observed += metrics.NODE_TIME.observation((node_class,), seconds)
        run_s = "" if times.run_s is None else times.run_s
        args = [times.workflow_id, run_s, RUN_TIME_WEIGHT, *observed]
        batch.script(scripts.RECORD_TIMES, [keys.run_times(self._keys.queue)], args)

    def finish(
        self,
        task_id: str,
        owner: str,
        *,
        expect: Mapping[str, Any],
        times: JobTimes | None,
        expire: ObjectExpiry | None = None,
        then: Take | None = None,
        **fields: Any,
    ) -> Finished:
        """A job's end, in one round trip: its ``times`` first (whoever sees the job finished sees it
        counted), then ``fields`` (its outcome) as ``update`` writes them, then ``owner`` lets go of its
        lease; ``expire``: when its outputs go, from now on (earlier than the bound its start set: a
        finish written later, even one refused, only ever sets a later time). ``then``: the worker's
        next take, as ``take`` makes it, in the same round trip (``Finished.taken``)."""
        batch = Batch(self._redis)
        if times is not None:
            self._add_times(batch, times)
        if expire is not None:
            batch.expire(expire, only_later=False)
        args = update_args(task_id, expect, fields, self._keys, ticket_for(self._messages, fields))
        outcome = batch.script(scripts.UPDATE_UNLESS_TERMINAL, self._keys.update(task_id), args)
        batch.script(scripts.RELEASE_LEASE, [keys.job_lease(task_id)], [owner])
        if then is None:
            return Finished(int(batch.execute()[outcome]) == 1)
        # Last, by its sha (the script is long): a Redis that forgot it fails this take alone, after
        # everything before it ran, and the take is made again on its own.
        batch.stored_script(self._claim, [], self._take_args(then))
        *replies, taken = batch.execute(raise_on_error=False)
        failed = next((r for r in replies if isinstance(r, redis.RedisError)), None)
        if failed is not None:  # (a take that went through is left to its lease: see the log)
            claimed = None if isinstance(taken, redis.RedisError) else _claimed(taken)
            if isinstance(claimed, Claimed):
                log.error(
                    "job %s was taken with a finish that failed; back in line once its lease lapses",
                    claimed.task_id,
                )
            raise QueueUnavailableError(f"Redis is unavailable: {failed}") from failed
        written = int(replies[outcome]) == 1
        if isinstance(taken, redis.exceptions.NoScriptError):
            try:
                return Finished(written, self.take(then), took=True)
            except QueueUnavailableError as exc:  # the finish is written: the caller takes later
                log.warning("the take after a finish failed: %s", exc)
                return Finished(written)
        if isinstance(taken, redis.RedisError):  # the outcome is written; the take is left to the caller
            log.error("a take with a job's finish failed: %s", taken)
            return Finished(written)
        return Finished(written, _claimed(taken), took=True)

    def take_ticket(self, timeout_s: float) -> TicketWait:
        """Waits up to ``timeout_s`` (in Redis) for a message on Celery's list and takes it, as Celery's
        consumer would: ``"taken"``, a ticket (its take is the caller's to make now); ``"timeout"``; or
        ``"not_a_ticket"``, an earlier version's message naming its job, put back where it was for
        Celery to deliver."""
        key = self._messages.list_key
        with translated():
            popped: Any = self._redis.brpop([key], timeout=timeout_s)
            if popped is None:
                return "timeout"
            message = popped[1]
            if text(message).startswith(self._messages.ticket_prefix):
                return "taken"
            self._redis.rpush(key, message)
        return "not_a_ticket"

    def send_ticket(self) -> None:
        """One more ticket: a worker that took one but cannot take a job now hands it on."""
        with translated():
            self._redis.lpush(self._messages.list_key, self._messages.ticket())

    def get(self, task_id: str) -> JobRecord | None:
        with translated():
            raw = self._redis.hgetall(keys.job(task_id))
        return decode_record(raw) if raw else None

    def update(
        self,
        task_id: str,
        *,
        expect: Mapping[str, Any] | None = None,
        expire: ObjectExpiry | None = None,
        **fields: Any,
    ) -> bool:
        """Applies ``fields`` unless the record is gone or terminal, or does not hold ``expect`` (e.g. the
        attempt and worker a writer started as: a worker whose job was taken back, or taken over by a
        later attempt, cannot write over it). True if applied. ``expire``: schedules the deletion of
        objects in the same round trip (whether the update applies or not)."""
        args = update_args(task_id, expect, fields, self._keys, ticket_for(self._messages, fields))
        batch = Batch(self._redis)
        applied = batch.script(scripts.UPDATE_UNLESS_TERMINAL, self._keys.update(task_id), args)
        if expire is not None:
            batch.expire(expire)
        return int(batch.execute()[applied]) == 1

    def read_events_of(
        self, cursors: Mapping[str, EventId], block_s: float | None
    ) -> dict[str, list[JobEvent]]:
        """The events of each task after its cursor, waiting up to ``block_s`` (in Redis) for the first
        of any (None: no wait); tasks with none are left out."""
        streams: dict[Any, Any] = {keys.job_events(t): cursor for t, cursor in cursors.items()}
        tasks = {keys.job_events(task_id): task_id for task_id in cursors}
        block = None if block_s is None else max(1, int(block_s * 1000))  # (0 would wait for ever)
        with translated():
            replies: Any = self._redis.xread(streams, block=block)
        return {tasks[text(stream)]: decode_events(entries) for stream, entries in replies or []}

    def acquire_lease(self, task_id: str, owner: str, ttl_s: float) -> bool:
        """True if ``owner`` holds the lease now (taken, or already its own from ``take``)."""
        with translated():
            return int(self._acquire(keys=[keys.job_lease(task_id)], args=[owner, int(ttl_s * 1000)])) == 1

    def renew_leases(self, task_ids: list[str], owner: str, ttl_s: float) -> list[bool]:
        """Renews each lease ``owner`` still holds, in one round trip; whether it held each."""
        batch = Batch(self._redis)
        for task_id in task_ids:
            batch.script(scripts.RENEW_LEASE, [keys.job_lease(task_id)], [owner, int(ttl_s * 1000)])
        return [int(held) == 1 for held in batch.execute()]

    def release_lease(self, task_id: str, owner: str) -> None:
        with translated():
            self._release(keys=[keys.job_lease(task_id)], args=[owner])

    def publish_preview(self, task_id: str, jpeg: bytes) -> None:
        """The job's latest preview frame: replaces the one before (the stream keeps one entry)."""
        key = keys.job_previews(task_id)
        with translated(), self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"jpeg": jpeg}, maxlen=1, approximate=False)
            pipe.expire(key, PREVIEW_TTL_S)
            pipe.publish(keys.changes_of(key), key)
            pipe.execute()

    def forget_waiting(self, task_id: str) -> None:
        """Drops a task whose record is gone from the waiting set (a delivery of an expired job)."""
        with translated():
            self._redis.zrem(self._keys.waiting, task_id)
