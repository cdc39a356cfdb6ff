"""The Celery application, shared by the API (to enqueue) and the workers (to consume).

Celery only delivers task ids; the job record in Redis says what the task is and where it stands, so no
result backend is configured. Late acks plus reject-on-worker-lost mean a job whose worker dies is
delivered again instead of being dropped.
"""

from __future__ import annotations

import kombu.exceptions
import redis
from celery import Celery

from comfyjobs.errors import QueueUnavailableError
from comfyjobs.manifests.registry import Registry
from comfyjobs.settings import Settings

RUN_JOB_TASK = "comfyjobs.run_job"


def longest_job_s(settings: Settings, registry: Registry) -> float:
    """The longest a delivered job can keep a worker busy: waiting for ComfyUI, then the time limit."""
    limits = [w.time_limit_s for w in registry.workflows.values() if w.time_limit_s is not None]
    return settings.comfyui_start_timeout_s + max([settings.job_time_limit_s, *limits])


def visibility_timeout_s(settings: Settings, registry: Registry) -> int:
    # Redis redelivers an unacked message after this long: shorter than the longest job, and a job
    # still running would be delivered to a second worker.
    return int(max(3600.0, 2 * longest_job_s(settings, registry)))


def make_celery(settings: Settings, registry: Registry) -> Celery:
    app = Celery("comfyjobs", broker=settings.require_redis_url(), set_as_current=False)
    transport = {"visibility_timeout": visibility_timeout_s(settings, registry)}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task only raises when the job record cannot be read or written (Redis down for longer than
        # the runner's retries). Celery then rejects the message without requeue; the job is not lost
        # for that: its record still says PENDING or running, and the reconciler sends it again once
        # its lease has lapsed.
        task_acks_on_failure_or_timeout=False,
        task_default_queue=settings.queue_name,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        enable_utc=True,
    )
    return app


def enqueue_job(app: Celery, task_id: str, queue: str) -> None:
    """Blocking (kombu): call from a worker thread, never on the event loop."""
    try:
        app.send_task(RUN_JOB_TASK, args=[task_id], task_id=task_id, queue=queue)
    except (kombu.exceptions.OperationalError, redis.RedisError, OSError) as exc:
        raise QueueUnavailableError(f"the job queue is unavailable: {exc}") from exc
