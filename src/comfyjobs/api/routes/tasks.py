"""GET /tasks/{task_id}: the job record as the client sees it. Unknown ids are 404, never PENDING."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from comfyjobs.api.services import Services, services
from comfyjobs.api.views import TaskView
from comfyjobs.errors import TaskNotFoundError

router = APIRouter(tags=["jobs"])


@router.get("/tasks/{task_id}", response_model=TaskView)
async def get_task(task_id: str, svc: Annotated[Services, Depends(services)]) -> TaskView:
    record = await svc.store.get(task_id)
    if record is None:
        raise TaskNotFoundError(f"no task {task_id!r} (unknown, or expired after JOB_TTL_S)")
    return TaskView.from_record(record, svc.settings.public_base_url)
