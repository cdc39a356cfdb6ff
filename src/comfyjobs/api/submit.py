"""Accepting a job: validate, resolve, record, enqueue. Shared by POST /generate and POST /workflows/{id}.

Order matters: the record is written before the message is sent, so a worker never receives a task it
cannot find; if sending fails the record is deleted and the client gets 503, so nothing is half-accepted.
"""

from __future__ import annotations

import logging
import uuid

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from comfyjobs.api.availability import require_available
from comfyjobs.api.services import Services
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import JobRecord
from comfyjobs.manifests.params import resolve_params
from comfyjobs.manifests.registry import Workflow
from comfyjobs.worker.celery_app import enqueue_job

log = logging.getLogger(__name__)


async def submit(svc: Services, workflow: Workflow, request: BaseModel) -> JobRecord:
    await require_available(svc.redis, workflow.id)
    params = await run_in_threadpool(resolve_params, workflow, request, svc.models.list)
    record = JobRecord(task_id=uuid.uuid4().hex, workflow_id=workflow.id, params=params)
    await svc.store.create(record)
    try:
        await run_in_threadpool(enqueue_job, svc.celery, record.task_id, svc.settings.queue_name)
    except QueueUnavailableError:
        log.error("enqueue of %s failed; its record is removed", record.task_id)
        await svc.store.delete(record.task_id)
        raise
    return record
