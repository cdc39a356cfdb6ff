"""The Celery task: take the job's id, run the job with this process's worker context. Nothing else.

The id is the Celery task id of the message (see jobs.delivery); a message from before that carries it as
the one argument."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from comfyjobs.jobs.delivery import RUN_JOB_TASK
from comfyjobs.worker.runner import RequeueJobError, WorkerContext, handle_delivery

_context: WorkerContext | None = None


def bind_context(context: WorkerContext) -> None:
    """Called once by the worker process before it consumes; the task runs in that same process."""
    global _context
    _context = context


def run_job(task: Task[Any, Any], task_id: str | None = None) -> None:
    if _context is None:
        raise RuntimeError("the worker context is not bound; run tasks through `comfyjobs worker`")
    try:
        handle_delivery(str(task_id or task.request.id), _context)
    except RequeueJobError as exc:
        raise Reject(f"re-queued: {exc}", requeue=True) from exc


def register(app: Celery) -> None:
    task = app.task(
        name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
    )
    task(run_job)
