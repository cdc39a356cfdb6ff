"""GET /tasks/{task_id} (with an optional long poll), DELETE /tasks/{task_id} (cancel), and
GET /tasks/{task_id}/events (Server-Sent Events).

Unknown ids are 404, never PENDING.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from comfyjobs.api.auth import Caller
from comfyjobs.api.services import Services, owned_task, services
from comfyjobs.api.task_feed import EVENT_ID_PATTERN
from comfyjobs.api.views import TaskView
from comfyjobs.errors import TaskFinishedError, TaskRunningError
from comfyjobs.storage.objects import output_prefix

router = APIRouter(tags=["jobs"])

LONG_POLL_MAX_S = 120.0


@router.get("/tasks/{task_id}", response_model=TaskView)
async def get_task(
    task_id: str,
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=LONG_POLL_MAX_S,
            description="Long poll: answer as soon as the task changes, or after this many seconds.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            pattern=EVENT_ID_PATTERN,
            description="With `wait`: the `last_event_id` you have seen; answers at once if the task "
            "changed after it.",
        ),
    ] = None,
    position: Annotated[
        int | None,
        Query(
            ge=1,
            description="With `wait`: the `queue.position` you have seen; answers at once if it moved.",
        ),
    ] = None,
) -> TaskView:
    """The task as it stands. While it waits for a worker, `queue.position` is its place in line."""
    if wait is None:
        return await svc.feed.current(task_id, caller)
    return await svc.feed.wait_for_change(task_id, caller, wait, since, position)


@router.delete(
    "/tasks/{task_id}",
    response_model=TaskView,
    responses={409: {"description": "The task already finished (`task_finished`)."}},
)
async def cancel_task(task_id: str, svc: Annotated[Services, Depends(services)], caller: Caller) -> TaskView:
    """Cancel: a queued job never runs; a running one is interrupted in ComfyUI by its worker, which
    then takes the next job. The task is CANCELLED at once."""
    record = await owned_task(svc, task_id, caller)
    cancelled = not record.is_terminal and await svc.store.cancel(task_id)
    if not cancelled:  # finished before, or in the meantime (the store refuses to touch a final state)
        finished = await svc.store.get(task_id)
        status = finished.status if finished else record.status
        raise TaskFinishedError(f"task {task_id!r} already finished ({status}); nothing to cancel")
    return await svc.feed.current(task_id, caller)


@router.get(
    "/tasks/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events `queued`, `started`, `progress`, `success`, `failure`, `cancelled`; each "
            "`data` is the task (as GET /tasks/{task_id}) right after that change. Ends after the final "
            "event; `: heartbeat` comments keep idle connections open. With previews on "
            "(COMFYUI_PREVIEW_METHOD), `preview` events carry the latest in-progress frame "
            "(`{task_id, content_type: image/jpeg, image_base64}`, about 2 a second, the latest at once "
            "on connect); they have no id.",
        },
        204: {"description": "Resumed after the final event: nothing more will come."},
    },
)
async def task_events(
    task_id: str,
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=EVENT_ID_PATTERN)] = None,
    after: Annotated[
        str | None,
        Query(pattern=EVENT_ID_PATTERN, description="As the Last-Event-ID header, where it cannot be set."),
    ] = None,
) -> Response:
    stream = await svc.feed.open_stream(task_id, caller, last_event_id or after)
    if stream is None:
        return Response(status_code=204)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete(
    "/tasks/{task_id}/outputs",
    status_code=204,
    response_class=Response,
    responses={409: {"description": "The task has not finished yet (`task_running`)."}},
)
async def delete_outputs(
    task_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> Response:
    """Deletes a finished task's output files now, rather than after OUTPUT_TTL_S. The task stays
    readable, with no outputs and `outputs_deleted: true`."""
    record = await owned_task(svc, task_id, caller)
    if not record.is_terminal:
        raise TaskRunningError(f"task {task_id!r} has not finished ({record.status}); cancel it first")
    await svc.store.mark_outputs_deleted(task_id)
    await run_in_threadpool(svc.objects.delete, output_prefix(task_id))
    return Response(status_code=204)
