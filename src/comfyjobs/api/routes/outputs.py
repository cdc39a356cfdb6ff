"""GET /outputs/{task_id}/{filename}: the files a job produced."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from comfyjobs.api.services import Services, services
from comfyjobs.storage.outputs import content_type_for

router = APIRouter(tags=["outputs"])


@router.get("/outputs/{task_id}/{filename}", response_class=FileResponse)
async def get_output(
    task_id: str, filename: str, svc: Annotated[Services, Depends(services)]
) -> FileResponse:
    path = await run_in_threadpool(svc.outputs.path, task_id, filename)
    return FileResponse(path, media_type=content_type_for(filename), filename=filename)
