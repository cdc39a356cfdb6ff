"""Comfy API v2 jobs: POST /api/v2/jobs (a raw API-format graph), GET /api/v2/jobs (newest first),
GET /api/v2/jobs/{id}, GET /api/v2/jobs/{id}/workflow, POST /api/v2/jobs/{id}/cancel.

One job model: a v2 job is admitted by the same script as POST /generate (record, place in line, Celery
message, quotas), run by the same workers, and readable as a task too (GET /tasks/{id}). It is a job of
the tenant whose key submitted it; another tenant's id answers 404 like an unknown one.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from comfyjobs import keys
from comfyjobs.api.auth import Caller
from comfyjobs.api.services import Services, owned_task, services
from comfyjobs.api.submit import admit, check_priority
from comfyjobs.api.v2.views import Job, Output, dump, job_view, output_view, status_of
from comfyjobs.errors import ApiV2Error
from comfyjobs.graphs.models import models_of
from comfyjobs.jobs.queue import PRIORITY_DEFAULT, Priority
from comfyjobs.jobs.record import RAW_GRAPH, JobRecord, JobStatus
from comfyjobs.jobs.store import QueuePlace
from comfyjobs.manifests.patching import build_graph

router = APIRouter(prefix="/api/v2", tags=["Comfy API v2"])

LIST_LIMIT_MAX = 100


class ExtraData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key_comfy_org: str | None = None


class JobRequest(BaseModel):
    workflow: dict[str, Any] = Field(description="API-format workflow graph, verbatim.")
    extra_data: ExtraData | None = None
    metadata: dict[str, str] | None = None
    priority: Priority = PRIORITY_DEFAULT  # comfyjobs's own, beside the spec's fields
    webhook_url: Any = None  # reserved by the spec: refused when given
    inputs: Any = None  # reserved by the spec: refused when given


async def job_of(svc: Services, record: JobRecord, place: QueuePlace | None = None) -> Job:
    """The v2 view of a record: its place in line (``place`` if already read), fresh output links, and
    whether a cancel is still stopping its prompt (its worker holds the lease)."""
    place = await svc.store.place_if_waiting(record, place)
    stopping = record.status == JobStatus.CANCELLED and bool(
        await svc.redis.exists(keys.job_lease(record.task_id))
    )
    return job_view(record, place, outputs_of(svc, record), svc.settings.job_ttl_s, stopping=stopping)


def outputs_of(svc: Services, record: JobRecord) -> list[Output]:
    views = []
    for index, output in enumerate(record.outputs):
        url, expires_at = svc.links.output(record.task_id, output.filename, output.content_type)
        views.append(output_view(record.task_id, index, output, url, expires_at))
    return views


@router.post("/jobs", status_code=201, response_model=None)
async def post_job(
    body: JobRequest,
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    """Queue an API-format graph. It is checked first against what the live workers' ComfyUI has."""
    for reserved in ("webhook_url", "inputs"):
        if getattr(body, reserved) is not None:
            raise ApiV2Error(
                f"{reserved!r} is reserved and not accepted yet", code="invalid_request", status=422
            )
    check_priority(svc, caller, body.priority)
    inputs = await svc.graphs.accept(body.workflow, caller.tenant)
    record = JobRecord(
        task_id=uuid.uuid4().hex,
        workflow_id=RAW_GRAPH,
        tenant=caller.tenant,
        graph=body.workflow,
        inputs=inputs,
        priority=body.priority,
        models=models_of(body.workflow),
    )
    key = f"v2:{idempotency_key}" if idempotency_key else None
    admission = await admit(svc, record, caller, key, json.dumps({"task_id": record.task_id}))
    if admission.outcome == "duplicate":  # the spec's keys are single use: no replay
        raise ApiV2Error(
            "this Idempotency-Key was used before; use a new key for a new job",
            code="idempotency_key_reuse",
            status=422,
        )
    response.headers["Location"] = f"/api/v2/jobs/{record.task_id}"
    return dump(await job_of(svc, record))


@router.get("/jobs", response_model=None)
async def list_jobs(
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    status: Annotated[
        Literal["queued", "running", "succeeded", "canceling", "canceled", "failed", "expired"] | None,
        Query(description="Only jobs in this status."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
    cursor: Annotated[str | None, Query(max_length=64, pattern=r"^\d+(\.\d+)?$")] = None,
) -> dict[str, Any]:
    """The caller's jobs, newest first (the tenant's, for an admin key too); `next_cursor` pages on."""
    before = float(cursor) if cursor else None
    found: list[dict[str, Any]] = []
    next_cursor: str | None = None
    while len(found) < limit:
        page = await svc.store.tenant_job_ids(caller.tenant, before, limit)
        if not page:
            next_cursor = None
            break
        records = await svc.store.get_many([task_id for task_id, _ in page])
        for (_, score), record in zip(page, records, strict=True):
            before = score
            if record is None or (status is not None and status_of(record) != status):
                continue
            item = dump(await job_of(svc, record))
            found.append({**item, "create_time": item["created_at"]})
            if len(found) == limit:
                break
        next_cursor = repr(before) if len(page) == limit or len(found) == limit else None
        if len(page) < limit:
            break
    return {"jobs": found, "next_cursor": next_cursor}


@router.get("/jobs/{job_id}", response_model=None)
async def get_job(job_id: str, svc: Annotated[Services, Depends(services)], caller: Caller) -> dict[str, Any]:
    """The job as it stands; outputs appear as they are stored."""
    return dump(await job_of(svc, await owned_task(svc, job_id, caller)))


@router.get("/jobs/{job_id}/workflow", response_model=None)
async def get_job_workflow(
    job_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> dict[str, Any]:
    """The API-format graph the job runs (for a manifest job: the graph its parameters build)."""
    record = await owned_task(svc, job_id, caller)
    if record.graph is not None:
        return {"workflow": record.graph, "format": "api"}
    registry = (
        await svc.catalog.registry_of(record.catalog_version)
        if record.catalog_version is not None
        else svc.catalog.current.registry
    )
    workflow = registry.workflow(record.workflow_id)
    return {"workflow": build_graph(workflow, record.params, registry.loras), "format": "api"}


@router.post("/jobs/{job_id}/cancel", response_model=None)
async def cancel_job(
    job_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> dict[str, Any]:
    """Cancel (idempotent): a queued job never runs; a running one is `canceling` until its worker has
    stopped the prompt, then `canceled`. A finished job is returned as it is."""
    record = await owned_task(svc, job_id, caller)
    if not record.is_terminal and await svc.store.cancel(job_id):
        record = await owned_task(svc, job_id, caller)
    return dump(await job_of(svc, record))
