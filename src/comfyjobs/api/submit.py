"""Accepting a job: validate, resolve, record, enqueue. Shared by POST /generate and POST /workflows/{id}.

The record, its place in line and its Celery message are written by one Redis script, which also enforces
MAX_QUEUE_DEPTH, TENANT_MAX_QUEUED and the Idempotency-Key: nothing is ever half-accepted, and two
concurrent requests cannot both slip past a check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from comfyjobs.api.services import Services
from comfyjobs.catalog.registries import Versioned
from comfyjobs.errors import (
    FieldProblem,
    IdempotencyConflictError,
    InvalidParamsError,
    MediaError,
    QueueFullError,
    TenantQueueFullError,
)
from comfyjobs.graphs.models import models_of
from comfyjobs.jobs.queue import PRIORITY_DEFAULT
from comfyjobs.jobs.record import JobRecord
from comfyjobs.jobs.store import Admission
from comfyjobs.manifests.model_values import source_of
from comfyjobs.manifests.params import resolve_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Workflow
from comfyjobs.manifests.schema import LoraSpec
from comfyjobs.media.fetch import check_url
from comfyjobs.tenancy import Principal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    replayed: bool  # an earlier request with the same Idempotency-Key made it


def request_hash(workflow: Workflow, request: BaseModel, **options: Any) -> str:
    """Of the request as the client sent it (before `random` seeds are drawn) and its ``options``
    (priority, webhook_url), to tell a retry of the same request from another one reusing its key."""
    given = {name: value for name, value in options.items() if value is not None}  # (older keys' hashes hold)
    # What the client set, not the version's defaults: a retry across a catalog switch is the same request.
    sent = {
        "workflow_id": workflow.id,
        "params": request.model_dump(mode="json", exclude_unset=True),
        **given,
    }
    return hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()


async def submit(
    svc: Services,
    catalog: Versioned,
    workflow: Workflow,
    request: BaseModel,
    caller: Principal,
    idempotency_key: str | None = None,
    priority: int = PRIORITY_DEFAULT,
    webhook_url: str | None = None,
) -> Submitted:
    check_priority(svc, caller, priority)
    await check_webhook_url(svc, webhook_url)
    models = await svc.models.lists(workflow.model_folders)
    params = resolve_params(workflow, request, models.get)
    await check_model_urls(svc, workflow, params)
    media = await svc.media.resolve(workflow, params, caller.tenant)
    record = JobRecord(
        task_id=uuid.uuid4().hex,
        workflow_id=workflow.id,
        catalog_version=catalog.version,
        tenant=caller.tenant,
        params=media.params,
        inputs=media.inputs,
        priority=priority,
        models=job_models(workflow, media.params, catalog.registry.loras),
        webhook_url=webhook_url,
    )
    if idempotency_key is None:  # (no retry to tell apart: no fingerprint)
        await admit(svc, record, caller, None, "")
    else:
        fingerprint = request_hash(
            workflow,
            request,
            priority=None if priority == PRIORITY_DEFAULT else priority,
            webhook_url=webhook_url,
        )
        value = json.dumps({"task_id": record.task_id, "request": fingerprint})
        admission = await admit(svc, record, caller, idempotency_key, value)
        if admission.outcome == "duplicate":
            return await _replay(svc, idempotency_key, admission.detail, fingerprint, caller)
    return Submitted(record=record, replayed=False)


async def admit(
    svc: Services, record: JobRecord, caller: Principal, idempotency_key: str | None, idempotency_value: str
) -> Admission:
    """Admits the record under the queue limits (429 past MAX_QUEUE_DEPTH or TENANT_MAX_QUEUED): created,
    or a duplicate of an earlier request with the same Idempotency-Key (nothing created then)."""
    admission = await svc.store.admit(
        record,
        max_waiting=svc.settings.max_queue_depth,
        max_waiting_per_tenant=svc.settings.tenant_max_queued,
        idempotency_key=idempotency_key,
        idempotency_value=idempotency_value,
    )
    if admission.outcome == "tenant_full":
        raise TenantQueueFullError(
            f"tenant {caller.tenant!r} already has {admission.detail} jobs waiting (TENANT_MAX_QUEUED="
            f"{svc.settings.tenant_max_queued}); try again when some have started"
        )
    if admission.outcome == "full":
        raise QueueFullError(
            f"the queue is full ({admission.detail} jobs waiting, MAX_QUEUE_DEPTH="
            f"{svc.settings.max_queue_depth}); try again later"
        )
    return admission


def job_models(workflow: Workflow, params: dict[str, Any], loras: Mapping[str, LoraSpec]) -> list[str]:
    """The model files the job's graph loads (model affinity). A workflow that names none, fixed or by a
    parameter, needs no graph built to know it."""
    if not workflow.model_folders and not models_of(workflow.template):
        return []
    return models_of(build_graph(workflow, params, loras))


async def check_model_urls(svc: Services, workflow: Workflow, params: dict[str, Any]) -> None:
    """Each model parameter given as a URL: from a host of MODEL_URL_ALLOWLIST, resolving only to
    addresses the SSRF guard allows (its redirects are checked as the worker follows them)."""
    problems = []
    for param in workflow.model_parameters:
        source = None if param.fixed else source_of(params.get(param.name))
        if source is None:
            continue
        field = f"params.{param.name}"
        refused = svc.model_urls.refusal(source.url)
        if refused is None:
            try:
                await asyncio.to_thread(check_url, source.url, svc.model_urls.policy)
            except MediaError as exc:
                refused = exc.message
        if refused is not None:
            problems.append(FieldProblem(field, refused))
    if problems:
        raise InvalidParamsError(problems)


async def check_webhook_url(svc: Services, url: str | None) -> None:
    """A webhook target: signable (WEBHOOK_SECRET is set) and allowed by the same SSRF guard as URL
    inputs, with WEBHOOK_URL_ALLOWLIST (checked again at each delivery, to the address it connects to)."""
    if url is None:
        return
    if svc.settings.webhook_secret is None:
        problem = "webhooks are not enabled on this server (WEBHOOK_SECRET is not set)"
        raise InvalidParamsError([FieldProblem("webhook_url", problem)])
    try:
        await asyncio.to_thread(check_url, url, svc.webhook_policy)  # resolves the host name
    except MediaError as exc:
        raise InvalidParamsError([FieldProblem("webhook_url", exc.message)]) from None


def check_priority(svc: Services, caller: Principal, priority: int) -> None:
    """TENANT_MAX_PRIORITY: the highest a tenant's key may ask for (admin keys: any)."""
    cap = svc.settings.tenant_max_priority
    if priority > cap and not caller.admin:
        raise InvalidParamsError(
            [FieldProblem("priority", f"at most {cap} for tenant {caller.tenant!r} (TENANT_MAX_PRIORITY)")]
        )


async def _replay(svc: Services, key: str, stored: str, fingerprint: str, caller: Principal) -> Submitted:
    first = json.loads(stored)
    if first["request"] != fingerprint:
        raise IdempotencyConflictError(
            f"Idempotency-Key {key!r} was used for another request (task {first['task_id']}); "
            "use a new key for a new request"
        )
    record = await svc.store.get(first["task_id"])
    # Gone: the key outlived its record (they share a TTL; only a manual delete does this).
    if record is None or not caller.sees(record.tenant):
        raise IdempotencyConflictError(f"Idempotency-Key {key!r} refers to a task that no longer exists")
    return Submitted(record=record, replayed=True)
