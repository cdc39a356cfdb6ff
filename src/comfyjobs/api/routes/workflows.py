"""GET /workflows, GET /workflows/{id}, and one typed POST /workflows/{id} per workflow for /docs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi import params as fastapi_params
from pydantic import BaseModel
from starlette.routing import BaseRoute

from comfyjobs.api.auth import Caller
from comfyjobs.api.availability import workflow_availability
from comfyjobs.api.routes.generate import (
    ACCEPT_RESPONSES,
    IdempotencyKey,
    WebhookUrl,
    accepted,
    submit_to_active,
)
from comfyjobs.api.services import Services, services
from comfyjobs.api.submit import submit
from comfyjobs.api.views import Accepted
from comfyjobs.catalog.registries import Versioned
from comfyjobs.jobs.queue import PRIORITY_DEFAULT, Priority
from comfyjobs.manifests.registry import Workflow
from comfyjobs.storage.models import ModelLists

CATALOG_HEADER = "Catalog-Version"


def describe(workflow: Workflow, models: ModelLists, catalog_version: str) -> dict[str, Any]:
    params = []
    for param in workflow.public_parameters:
        item = param.public_dict()
        if param.choices_from is not None:
            item["choices"] = models.get(param.choices_from, [])
        params.append(item)
    return {
        "id": workflow.id,
        "catalog_version": catalog_version,
        "description": workflow.description,
        "parameters": params,
    }


router = APIRouter(tags=["workflows"])


@router.get("/workflows")
async def list_workflows(
    response: Response, svc: Annotated[Services, Depends(services)]
) -> list[dict[str, Any]]:
    """Every public workflow of the active catalog version (header `Catalog-Version`, and in each item)
    with its parameters (model choices as currently installed) and its `availability` on the running
    workers (null while no worker has checked it)."""
    catalog = svc.catalog.current
    response.headers[CATALOG_HEADER] = catalog.version
    models = await svc.models.lists(catalog.registry.model_folders)
    described = [describe(w, models, catalog.version) for w in catalog.registry.workflows.values()]
    availability = await workflow_availability(svc.redis)
    for item in described:
        found = availability.get(item["id"])
        item["availability"] = found.model_dump() if found else None
    return described


@router.get("/workflows/{workflow_id}")
async def get_workflow(
    workflow_id: str, response: Response, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    catalog = svc.catalog.current
    response.headers[CATALOG_HEADER] = catalog.version
    workflow = catalog.registry.workflow(workflow_id)
    described = describe(workflow, await svc.models.lists(workflow.model_folders), catalog.version)
    found = (await workflow_availability(svc.redis)).get(workflow_id)
    described["availability"] = found.model_dump() if found else None
    described["request_schema"] = workflow.request_model.model_json_schema()
    return described


class TypedRoutes:
    """One typed `POST /workflows/{id}` per workflow of the active catalog version, for /docs: replaced
    as a whole when another version is activated (``install``). Routes are matched on the event loop, so
    a request sees the old set or the new one, never a mix; one already matched runs with its version."""

    def __init__(self, app: FastAPI, dependencies: Sequence[fastapi_params.Depends]) -> None:
        self._app = app
        self._dependencies = list(dependencies)
        self._installed: list[BaseRoute] = []

    def install(self, catalog: Versioned) -> None:
        made = APIRouter(tags=["workflows"], dependencies=self._dependencies)
        for workflow in catalog.registry.workflows.values():
            _add_typed_route(made, catalog, workflow)
        # Last: a workflow of another version (or none) gets the 404 `workflow_not_found` of /generate.
        made.add_api_route(
            "/workflows/{workflow_id}", run_any_workflow, methods=["POST"], include_in_schema=False
        )
        kept = [r for r in self._app.router.routes if all(r is not old for old in self._installed)]
        self._app.router.routes = [*kept, *made.routes]
        self._installed = list(made.routes)
        self._app.openapi_schema = None  # /docs and /openapi.json are made again from the routes


async def run_any_workflow(
    workflow_id: str,
    body: dict[str, Any],
    response: Response,
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
    priority: Annotated[Priority, Query()] = PRIORITY_DEFAULT,
    webhook_url: Annotated[WebhookUrl, Query()] = None,
) -> Accepted:
    """What the typed routes do, for a workflow they do not have (yet): the active version decides."""
    return await submit_to_active(
        svc, response, workflow_id, body, caller, idempotency_key, priority, webhook_url
    )


def _add_typed_route(router: APIRouter, catalog: Versioned, workflow: Workflow) -> None:
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
        submitted = await submit(
            svc, catalog, workflow, params, caller, idempotency_key, priority, webhook_url
        )
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
