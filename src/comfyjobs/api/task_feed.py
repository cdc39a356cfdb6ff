"""Following a task: its current view, the long poll, and the Server-Sent Events stream.

All three read the task's event stream (see ``keys.job_events``), which the job store appends to in the
same Lua call that changes the record. Waiting is on the API's one change subscriber (jobs.changes): the
streams are read when it says they got an entry, never on a timer; an events stream holds one watch for
its whole life, so a quiet one costs Redis nothing between heartbeats (and asks whether its task expired
once a minute). A job still in the queue also listens to the queue's departures stream, so its place in
line is re-announced when a job ahead of it is taken.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.sse import format_sse_event

from comfyjobs.api.availability import FleetView, blocked_reason
from comfyjobs.api.eta import Estimator
from comfyjobs.api.views import Links, TaskView
from comfyjobs.errors import QueueUnavailableError, TaskNotFoundError
from comfyjobs.jobs.record import TERMINAL_STATUSES, JobRecord, JobStatus
from comfyjobs.jobs.store import AsyncJobStore, EventId, JobEvent, Preview, QueuePlace, Snapshot
from comfyjobs.tenancy import Principal

log = logging.getLogger(__name__)

EVENT_NAMES = {
    JobStatus.PENDING: "queued",
    JobStatus.STARTED: "started",
    JobStatus.PROGRESS: "progress",
    JobStatus.SUCCESS: "success",
    JobStatus.FAILURE: "failure",
    JobStatus.CANCELLED: "cancelled",
}
EVENT_ID_PATTERN = r"^\d+-\d+$"
HEARTBEAT = b": heartbeat\n\n"
EXPIRY_CHECK_S = 60.0  # a quiet stream asks at most this often whether its task expired


def event_id_key(event_id: EventId) -> tuple[int, int]:
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


def _not_found(task_id: str) -> TaskNotFoundError:
    return TaskNotFoundError(f"no task {task_id!r} (unknown, or expired after JOB_TTL_S)")


class ExpiryCheck:
    """Whether a quiet stream's task expired (JOB_TTL_S) while it listened, asked of Redis at most every
    EXPIRY_CHECK_S, not at each heartbeat: a thousand quiet streams must not keep the pool busy."""

    def __init__(self, store: AsyncJobStore, task_id: str, every_s: float = EXPIRY_CHECK_S) -> None:
        self._store = store
        self._task_id = task_id
        self._every_s = every_s
        self._checked_at = time.monotonic()

    async def expired(self) -> bool:
        if time.monotonic() - self._checked_at < self._every_s:
            return False
        self._checked_at = time.monotonic()
        return not await self._store.exists(self._task_id)


class TaskFeed:
    def __init__(
        self, store: AsyncJobStore, links: Links, heartbeat_s: float, estimator: Estimator, fleet: FleetView
    ) -> None:
        self._store = store
        self._fleet = fleet  # (what the workers run: a waiting job says why none can run it)
        self._estimator = estimator
        self._links = links
        self._heartbeat_s = heartbeat_s

    async def _view(
        self, record: JobRecord, last_event_id: EventId | None, place: QueuePlace | None = None
    ) -> TaskView:
        place = await self._store.place_if_waiting(record, place)
        eta = (await self._estimator.model()).estimate(record, place)
        blocked = await self._blocked(record, place)
        return TaskView.from_record(record, self._links, place, last_event_id, eta, blocked)

    async def _blocked(self, record: JobRecord, place: QueuePlace | None) -> str | None:
        """Why no worker can run it, while it waits in line (the live workers' view, read once a second)."""
        if place is None:
            return None
        return blocked_reason(await self._fleet.beats(), record, self._store.queue_name)

    async def _snapshot(self, task_id: str, caller: Principal) -> Snapshot:
        """Another tenant's task is not found, exactly as an unknown one."""
        snapshot = await self._store.snapshot(task_id)
        if snapshot is None or not caller.sees(snapshot.record.tenant):
            raise _not_found(task_id)
        return snapshot

    async def _snapshot_view(self, snapshot: Snapshot) -> TaskView:
        record, place = snapshot.record, snapshot.place
        eta = (await self._estimator.model()).estimate(record, place)
        blocked = await self._blocked(record, place)
        return TaskView.from_record(record, self._links, place, snapshot.last_event_id, eta, blocked)

    async def current(self, task_id: str, caller: Principal) -> TaskView:
        return await self._snapshot_view(await self._snapshot(task_id, caller))

    async def wait_for_change(
        self,
        task_id: str,
        caller: Principal,
        wait_s: float,
        since: EventId | None,
        position: int | None = None,
    ) -> TaskView:
        """The view as soon as the task changes after ``since`` (default: now), or at ``wait_s``.

        Answers at once if the task is finished, changed after ``since``, or waits in the queue at
        another place than ``position``; while it waits, moving up in line counts as a change."""
        snapshot = await self._snapshot(task_id, caller)
        record, last, place = snapshot.record, snapshot.last_event_id, snapshot.place
        changed = since is not None and last is not None and event_id_key(last) > event_id_key(since)
        moved = position is not None and place.position is not None and place.position != position
        if record.is_terminal or changed or moved or wait_s <= 0:
            return await self._snapshot_view(snapshot)
        departures = snapshot.last_departure if record.status == JobStatus.PENDING else None
        await self._store.wait_for_change(task_id, since or last or "0-0", wait_s, departures)
        return await self.current(task_id, caller)

    async def open_stream(
        self, task_id: str, caller: Principal, after: EventId | None
    ) -> AsyncIterator[bytes] | None:
        """The task's SSE stream; None when a client resumes after the final event (answer 204, which
        tells an EventSource to stop reconnecting). An unknown id raises, before any byte is sent."""
        snapshot = await self._store.snapshot(task_id, events=True, preview=True)
        if snapshot is None or not caller.sees(snapshot.record.tenant):
            raise _not_found(task_id)
        last = snapshot.last_event_id
        if (
            snapshot.record.is_terminal
            and after is not None
            and last is not None
            and event_id_key(after) >= event_id_key(last)
        ):
            return None
        return self._ended_cleanly(self._stream(task_id, after, snapshot), task_id)

    async def _ended_cleanly(self, stream: AsyncIterator[bytes], task_id: str) -> AsyncIterator[bytes]:
        """Once the response has started, a Redis outage can only end the stream: the client reconnects
        with Last-Event-ID and misses nothing (the events are in Redis)."""
        try:
            async for chunk in stream:
                yield chunk
        except QueueUnavailableError as exc:
            log.warning("events stream of %s ended: %s", task_id, exc)

    async def _stream(self, task_id: str, after: EventId | None, snapshot: Snapshot) -> AsyncIterator[bytes]:
        # Views are rebuilt by replaying the events from the first (the whole record), so each event
        # carries the task as it was right after that change, whatever point a client resumes from.
        state: dict[str, Any] = {}
        cursor: EventId = "0-0"
        resume_key = event_id_key(after) if after is not None else (-1, -1)
        # The snapshot read the events, the latest preview and the last departure in one step: a job
        # leaving the queue after it always wakes the wait below. Its place in line is the place now,
        # for the events it replays.
        departures = snapshot.last_departure
        latest_preview = snapshot.preview
        previews: EventId = latest_preview.id if latest_preview else "0-0"
        pending: list[JobEvent] = snapshot.events or []
        place: QueuePlace | None = snapshot.place
        position: int | None = None
        expiry = ExpiryCheck(self._store, task_id)
        with self._store.watching() as watch:  # registered once: a quiet stream reads nothing
            while True:
                for event in pending:
                    state.update(event.changes)
                    cursor = event.id
                    if event_id_key(event.id) <= resume_key:
                        continue
                    record = JobRecord.model_validate(state)
                    view = await self._view(record, event.id, place)
                    position = view.queue.position if view.queue else None
                    yield _format(event, view)
                if not state or state.get("status") in TERMINAL_STATUSES:
                    return  # finished, or expired (with its events) while we were connected
                if latest_preview is not None:  # the latest frame at once, then each new one
                    yield _format_preview(task_id, latest_preview)
                    latest_preview = None
                place = None  # (later events: looked up as they come)
                waiting = state.get("status") == JobStatus.PENDING
                change = await self._store.wait_for_change(
                    task_id, cursor, self._heartbeat_s, departures if waiting else None, previews, watch
                )
                pending = change.events
                if change.preview is not None:
                    previews, latest_preview = change.preview.id, change.preview
                if change.departed is not None:
                    departures = change.departed
                    if not pending:
                        view = await self._view(JobRecord.model_validate(state), cursor)
                        if view.queue is not None and view.queue.position != position:
                            position = view.queue.position
                            # No id: moving up in line is not an event of the record, so a client that
                            # resumes from here must still get the record's next event.
                            yield format_sse_event(event="queued", data_str=view.model_dump_json())
                elif not pending and change.preview is None:
                    if await expiry.expired():
                        return  # (JOB_TTL_S) while we listened: nothing more would come
                    yield HEARTBEAT


def _format_preview(task_id: str, preview: Preview) -> bytes:
    """No id either: a preview is not an event of the record (and only the latest one is kept)."""
    data = {
        "task_id": task_id,
        "content_type": "image/jpeg",
        "image_base64": base64.b64encode(preview.jpeg).decode(),
    }
    return format_sse_event(event="preview", data_str=json.dumps(data))


def _format(event: JobEvent, view: TaskView) -> bytes:
    status = event.changes.get("status")
    name = EVENT_NAMES.get(JobStatus(status), "update") if status else "update"
    return format_sse_event(event=name, id=event.id, data_str=view.model_dump_json())
