"""POST /generate: one endpoint for every workflow, parameters checked against that workflow's model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from comfyjobs.api.services import Services, services
from comfyjobs.api.submit import submit
from comfyjobs.api.views import Accepted
from comfyjobs.manifests.params import validate_params

router = APIRouter(tags=["jobs"])


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(examples=["txt2img"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"prompt": "a red fox", "steps": 20}])


def accepted(svc: Services, response: Response, task_id: str, **fields: Any) -> Accepted:
    status_url = f"{svc.settings.public_base_url}/tasks/{task_id}"
    response.headers["Location"] = status_url
    return Accepted(task_id=task_id, status_url=status_url, **fields)


@router.post("/generate", status_code=202, response_model=Accepted)
async def generate(
    body: GenerateRequest, response: Response, svc: Annotated[Services, Depends(services)]
) -> Accepted:
    """Queue a job. The parameters of each workflow are listed at `GET /workflows/{id}` and, typed, under
    `POST /workflows/{id}` in these docs."""
    workflow = svc.registry.workflow(body.workflow_id)
    record = await submit(svc, workflow, validate_params(workflow, body.params))
    return accepted(
        svc, response, record.task_id, status=record.status, workflow_id=workflow.id, params=record.params
    )
