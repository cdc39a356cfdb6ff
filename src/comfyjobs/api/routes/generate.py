"""POST /generate: one endpoint for every workflow, parameters checked against that workflow's model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from comfyjobs.api.auth import Caller
from comfyjobs.api.services import Services, services
from comfyjobs.api.submit import Submitted, submit
from comfyjobs.api.views import Accepted
from comfyjobs.jobs.queue import PRIORITY_DEFAULT, Priority
from comfyjobs.manifests.params import validate_params
from comfyjobs.tenancy import Principal

router = APIRouter(tags=["jobs"])


WebhookUrl = Annotated[
    str | None,
    Field(
        max_length=2048,
        description="Gets the task's events (task.started, task.succeeded, task.failed, task.cancelled) as "
        "signed POSTs (Standard Webhooks), retried until delivered.",
        examples=["https://example.com/hooks/comfyjobs"],
    ),
]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(examples=["txt2img"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"prompt": "a red fox", "steps": 20}])
    priority: Priority = PRIORITY_DEFAULT
    webhook_url: WebhookUrl = None


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe submission: the same key with the same request returns the task it made "
        "first (header `Idempotent-Replayed: true`); the same key with another request is a 409.",
    ),
]

ACCEPT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "Workflow unavailable, or Idempotency-Key reused for another request."},
    429: {"description": "MAX_QUEUE_DEPTH jobs already wait (`queue_full`); see Retry-After."},
}


def accepted(svc: Services, response: Response, submitted: Submitted) -> Accepted:
    record = submitted.record
    status_url = f"{svc.settings.public_base_url}/tasks/{record.task_id}"
    response.headers["Location"] = status_url
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Accepted(
        task_id=record.task_id,
        status_url=status_url,
        status=record.status,
        workflow_id=record.workflow_id,
        catalog_version=record.catalog_version,
        params=record.params,
        priority=record.priority,
    )


@router.post("/generate", status_code=202, response_model=Accepted, responses=ACCEPT_RESPONSES)
async def generate(
    body: GenerateRequest,
    response: Response,
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Queue a job. The parameters of each workflow are listed at `GET /workflows/{id}` and, typed, under
    `POST /workflows/{id}` in these docs."""
    return await submit_to_active(
        svc, response, body.workflow_id, body.params, caller, idempotency_key, body.priority, body.webhook_url
    )


async def submit_to_active(
    svc: Services,
    response: Response,
    workflow_id: str,
    params: dict[str, Any],
    caller: Principal,
    idempotency_key: str | None,
    priority: int,
    webhook_url: str | None,
) -> Accepted:
    """A job of the active catalog version's ``workflow_id`` (404 when it has none), ``params`` checked
    against that workflow's model: POST /generate, and POST /workflows/{id} for a workflow the typed
    routes do not have."""
    catalog = svc.catalog.current  # this request's version throughout, whatever is activated meanwhile
    workflow = catalog.registry.workflow(workflow_id)
    request = validate_params(workflow, params)
    submitted = await submit(svc, catalog, workflow, request, caller, idempotency_key, priority, webhook_url)
    return accepted(svc, response, submitted)
