"""GET /workflows, GET /workflows/{id}, and one typed POST /workflows/{id} per workflow for /docs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from comfyjobs.api.auth import Caller
from comfyjobs.api.availability import workflow_availability
from comfyjobs.api.routes.generate import ACCEPT_RESPONSES, IdempotencyKey, WebhookUrl, accepted
from comfyjobs.api.services import Services, services
from comfyjobs.api.submit import submit
from comfyjobs.api.views import Accepted
from comfyjobs.jobs.queue import PRIORITY_DEFAULT, Priority
from comfyjobs.manifests.registry import Registry, Workflow
from comfyjobs.storage.models import ModelLists


def describe(workflow: Workflow, models: ModelLists) -> dict[str, Any]:
    params = []
    for param in workflow.public_parameters:
        item = param.public_dict()
        if param.choices_from is not None:
            item["choices"] = models.get(param.choices_from, [])
        params.append(item)
    return {"id": workflow.id, "description": workflow.description, "parameters": params}


def build_router(registry: Registry) -> APIRouter:
    router = APIRouter(tags=["workflows"])

    @router.get("/workflows")
    async def list_workflows(svc: Annotated[Services, Depends(services)]) -> list[dict[str, Any]]:
        """Every public workflow with its parameters (model choices as currently installed) and its
        `availability` on the running workers (null while no worker has checked it)."""

        models = await svc.models.lists(svc.registry.model_folders)
        described = [describe(w, models) for w in svc.registry.workflows.values()]
        availability = await workflow_availability(svc.redis)
        for item in described:
            found = availability.get(item["id"])
            item["availability"] = found.model_dump() if found else None
        return described

    @router.get("/workflows/{workflow_id}")
    async def get_workflow(workflow_id: str, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
        workflow = svc.registry.workflow(workflow_id)
        described = describe(workflow, await svc.models.lists(workflow.model_folders))
        found = (await workflow_availability(svc.redis)).get(workflow_id)
        described["availability"] = found.model_dump() if found else None
        described["request_schema"] = workflow.request_model.model_json_schema()
        return described

    for workflow in registry.workflows.values():
        _add_typed_route(router, workflow)
    return router


def _add_typed_route(router: APIRouter, workflow: Workflow) -> None:
    model = workflow.request_model

    async def run_workflow(
        params: BaseModel,
        response: Response,
        svc: Annotated[Services, Depends(services)],
        caller: Caller,
        idempotency_key: IdempotencyKey = None,
        priority: Annotated[Priority, Query()] = PRIORITY_DEFAULT,
        webhook_url: Annotated[WebhookUrl, Query()] = None,
    ) -> Accepted:
        submitted = await submit(svc, workflow, params, caller, idempotency_key, priority, webhook_url)
        return accepted(svc, response, submitted)

    # FastAPI reads the body type from the signature: give this copy the workflow's own model.
    run_workflow.__annotations__["params"] = model
    router.add_api_route(
        f"/workflows/{workflow.id}",
        run_workflow,
        methods=["POST"],
        status_code=202,
        response_model=Accepted,
        responses=ACCEPT_RESPONSES,
        summary=f"Queue a {workflow.id} job",
        description=workflow.description,
        operation_id=f"run_{workflow.id.replace('-', '_')}",
    )
