"""The Celery task: decode the id, run the job with this process's worker context. Nothing else."""

from __future__ import annotations

from celery import Celery
from celery.exceptions import Reject

from comfyjobs.worker.celery_app import RUN_JOB_TASK
from comfyjobs.worker.runner import RequeueJobError, WorkerContext, handle_delivery

_context: WorkerContext | None = None


def bind_context(context: WorkerContext) -> None:
    """Called once by the worker process before it consumes; the task runs in that same process."""
    global _context
    _context = context


def run_job(task_id: str) -> None:
    if _context is None:
        raise RuntimeError("the worker context is not bound; run tasks through `comfyjobs worker`")
    try:
        handle_delivery(str(task_id), _context)
    except RequeueJobError as exc:
        raise Reject(f"re-queued: {exc}", requeue=True) from exc


def register(app: Celery) -> None:
    app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(run_job)
