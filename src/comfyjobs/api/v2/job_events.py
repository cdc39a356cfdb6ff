"""GET /api/v2/jobs/{id}/events: the v2 live view of a job, as the spec's SSE contract has it.

On connect: the current `status` (with `queue_position` while queued), the latest `progress` and the
latest `preview`; then each change: `status` on a transition or a move in line, `progress` snapshots,
`preview` frames, one `output` per stored output, always before the terminal `status`, after which the
stream ends. No ids (the spec's stream is live, not replayable); `: keepalive` comments every
SSE_HEARTBEAT_S. It waits on the same change subscriber as GET /tasks/{id}/events (see jobs.changes).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from comfyjobs.api.auth import Caller
from comfyjobs.api.services import Services, owned_task, services
from comfyjobs.api.task_feed import ExpiryCheck
from comfyjobs.api.v2.jobs import job_of
from comfyjobs.api.v2.views import TERMINAL_V2, Job, dump
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import JobRecord, JobStatus
from comfyjobs.jobs.store import EventId, Preview, QueuePlace

log = logging.getLogger(__name__)

KEEPALIVE = b": keepalive\n\n"

router = APIRouter(prefix="/api/v2", tags=["Comfy API v2"])


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return format_sse_event(event=event, data_str=json.dumps(data, separators=(",", ":")))


def _preview(preview: Preview, node_id: str | None) -> bytes:
    data = {
        "node_id": node_id or "",
        "content_type": "image/jpeg",
        "data_base64": base64.b64encode(preview.jpeg).decode(),
    }
    return _frame("preview", data)


class _Shown:
    """What the client was last sent, so each change sends only what differs."""

    def __init__(self) -> None:
        self.status: tuple[str, int | None] | None = None
        self.progress: dict[str, Any] | None = None
        self.outputs = 0

    def frames(self, job: Job) -> list[bytes]:
        """A new status first (on connect too), then progress and new outputs; but a terminal status
        last, after the outputs, since a client stops reading at it."""
        out = []
        data = dump(job)
        status = (job.status, job.queue_position)
        status_frame = None
        if status != self.status:
            self.status = status
            status_frame = _frame("status", {"status": job.status, "queue_position": job.queue_position})
        if status_frame is not None and job.status not in TERMINAL_V2:
            out.append(status_frame)
        if data["progress"] is not None and data["progress"] != self.progress:
            self.progress = data["progress"]
            out.append(_frame("progress", data["progress"]))
        out += [_frame("output", output) for output in data["outputs"][self.outputs :]]
        self.outputs = len(data["outputs"])
        if status_frame is not None and job.status in TERMINAL_V2:
            out.append(status_frame)
        return out


async def _stream(svc: Services, record: JobRecord) -> AsyncIterator[bytes]:
    store, task_id = svc.store, record.task_id
    shown = _Shown()
    snapshot = await store.snapshot(task_id, preview=True)  # (a later departure than its own wakes us)
    if snapshot is None:
        return
    departures = snapshot.last_departure
    record, cursor = snapshot.record, snapshot.last_event_id or "0-0"
    state = record.model_dump(mode="json")  # kept current from the events: no re-read per change
    preview = snapshot.preview
    previews: EventId = preview.id if preview else "0-0"
    place: QueuePlace | None = snapshot.place  # the first view's; later ones look it up
    changed = True
    expiry = ExpiryCheck(store, task_id)
    with store.watching() as watch:  # registered once: a quiet stream reads nothing
        while True:
            if changed:
                record = JobRecord.model_validate(state)
                job = await job_of(svc, record, place)
                for frame in shown.frames(job):
                    yield frame
                if job.status in TERMINAL_V2:
                    return
            place = None
            if preview is not None:
                yield _preview(preview, record.progress.node)
                preview = None
            waiting = record.status == JobStatus.PENDING
            change = await store.wait_for_change(
                task_id,
                cursor,
                svc.settings.sse_heartbeat_s,
                departures if waiting else None,
                previews,
                watch,
            )
            for event in change.events:
                state.update(event.changes)
                cursor = event.id
            if change.departed is not None:
                departures = change.departed
            if change.preview is not None:
                previews, preview = change.preview.id, change.preview
            changed = bool(change.events) or change.departed is not None  # a move in line is a change too
            if change.empty:
                if await expiry.expired():
                    return  # expired while we listened
                yield KEEPALIVE


async def _ended_cleanly(stream: AsyncIterator[bytes], task_id: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    except QueueUnavailableError as exc:  # the client reconnects and gets a fresh snapshot
        log.warning("v2 events stream of %s ended: %s", task_id, exc)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> StreamingResponse:
    """Live events: `status`, `progress`, `preview`, `output`; ends after the terminal `status`."""
    record = await owned_task(svc, job_id, caller)
    return StreamingResponse(
        _ended_cleanly(_stream(svc, record), job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
