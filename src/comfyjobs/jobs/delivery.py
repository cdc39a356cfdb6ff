"""How a job reaches a worker: the Celery application (the workers consume with it) and the message that
delivers a job, which the API writes itself, inside the Redis script that admits the job.

Celery only delivers task ids; the job record in Redis says what the task is and where it stands, so no
result backend is configured. Late acks plus reject-on-worker-lost mean a job whose worker dies is
delivered again instead of being dropped.

Sending: the message is what Celery's own ``send_task`` would push onto the queue's Redis list. Celery
builds it once, at start, through a transport that keeps it instead of sending it (``JobMessages``); each
job then gets a copy with its task id and a fresh delivery tag. So the record and its message are written by
one script (never one without the other), without a kombu round trip per job, and Celery's format is still
Celery's own code's, whatever its version.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.transport import memory

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


_TASK_ID = "@@comfyjobs-task-id@@"
_DELIVERY_TAG = "@@comfyjobs-delivery-tag@@"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def _kept_message(app: Celery, queue: str) -> tuple[str, dict[str, Any]]:
    """(list key, message) of ``send_task`` through a transport that keeps what it would put."""
    kept: list[tuple[str, dict[str, Any]]] = []

    class KeptChannel(memory.Channel):
        def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
            kept.append((queue, message))

    class KeepingTransport(memory.Transport):
        Channel = KeptChannel

    connection = Connection(transport=KeepingTransport)  # type: ignore[no-untyped-call]
    with connection as conn, conn.Producer() as producer:
        app.send_task(RUN_JOB_TASK, task_id=_TASK_ID, queue=queue, producer=producer)
    (sent,) = kept
    return sent


class JobMessages:
    """The Celery message that delivers one job: ``message(task_id)`` is the bytes to LPUSH onto ``list_key``
    (what ``app.send_task(RUN_JOB_TASK, task_id=task_id, queue=queue)`` would have pushed). The task id
    travels as the Celery task id only, so the message body is the same for every job."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.list_key, message = _kept_message(app, queue)
        message["properties"]["delivery_tag"] = _DELIVERY_TAG
        text = json.dumps(message)
        if text.count(_TASK_ID) < 1 or text.count(_DELIVERY_TAG) != 1:
            raise RuntimeError("Celery's task message no longer carries the task id where expected")
        self._template = text

    def message(self, task_id: str) -> str:
        if not _SAFE_ID.fullmatch(task_id):  # it goes into JSON text as it is
            raise ValueError(f"task ids are letters, digits, '-' and '_': {task_id!r}")
        return self._template.replace(_TASK_ID, task_id).replace(_DELIVERY_TAG, str(uuid.uuid4()))
