"""The Celery application, shared by the API (to enqueue) and the workers (to consume).

Celery only delivers task ids; the job record in Redis says what the task is and where it stands, so no
result backend is configured. Late acks plus reject-on-worker-lost mean a job whose worker dies is
delivered again instead of being dropped.
"""

from __future__ import annotations

from celery import Celery

from comfyjobs.settings import Settings

RUN_JOB_TASK = "comfyjobs.run_job"


def visibility_timeout_s(settings: Settings) -> int:
    # An unacked message is redelivered after this long: it must exceed the longest job.
    return int(max(3600.0, settings.job_time_limit_s * 2))


def make_celery(settings: Settings) -> Celery:
    app = Celery("comfyjobs", broker=settings.require_redis_url(), set_as_current=False)
    transport = {"visibility_timeout": visibility_timeout_s(settings)}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
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
    app.send_task(RUN_JOB_TASK, args=[task_id], task_id=task_id, queue=queue)
