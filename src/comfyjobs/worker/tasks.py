"""The Celery tasks: a ticket takes the next job in line and runs it with this process's worker context
(see jobs.delivery); a message of an earlier version names its job. Nothing else."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from comfyjobs.jobs.delivery import RUN_JOB_TASK, TAKE_JOB_TASK
from comfyjobs.worker.runner import RequeueJobError, WorkerContext, handle_delivery
from comfyjobs.worker.takes import take_jobs

_context: WorkerContext | None = None


def bind_context(context: WorkerContext) -> None:
    """Called once by the worker process before it consumes; the task runs in that same process."""
    global _context
    _context = context


def _bound() -> WorkerContext:
    if _context is None:
        raise RuntimeError("the worker context is not bound; run tasks through `comfyjobs worker`")
    return _context


def take_job() -> None:
    take_jobs(_bound())


def run_job(task: Task[Any, Any], task_id: str | None = None) -> None:
    _bound()
    assert _context is not None
    try:
        handle_delivery(str(task_id or task.request.id), _context)
    except RequeueJobError as exc:
        raise Reject(f"re-queued: {exc}", requeue=True) from exc


def register(app: Celery) -> None:
    app.task(name=TAKE_JOB_TASK, ignore_result=True)(take_job)
    legacy = app.task(
        name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
    )
    legacy(run_job)
