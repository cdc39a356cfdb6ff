"""How work reaches a worker: the Celery application (the workers consume with it) and its messages,
*tickets*, which the API writes itself, inside the Redis script that puts a job in line.

A ticket names no job: it tells a worker "take the next job in line now" (``TAKE_JOB_TASK``), and the
worker's take (jobs.queue ``CLAIM``) picks it by priority, tenants' turns and so on. So the order, the
positions and the depth follow from one structure (jobs.queue), and Celery's list is only a count of
wake-ups: nothing reads its messages. One ticket is sent per job put in line; a ticket lost (its worker
died holding it) is made up for by the reconciler from the list's length alone; a ticket too many finds
an empty line and costs nothing. No result backend: the job record says where a job stands.

Sending: a ticket is what Celery's own ``send_task`` would push onto the queue's Redis list. Celery builds
it once, at start, through a transport that keeps it instead of sending it (``JobMessages``); each ticket
is a copy with a fresh id and delivery tag. So a job and its ticket are written by one script (never one
without the other), with no kombu round trip per job, and the format is Celery's own, whatever its version.
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

TAKE_JOB_TASK = "comfyjobs.take_job"
RUN_JOB_TASK = "comfyjobs.run_job"  # messages of earlier versions, one per job, naming it
PIPELINE_DEPTH = 2  # tickets a worker takes at once: its ComfyUI has the next job queued while one runs


def longest_job_s(settings: Settings, registry: Registry) -> float:
    """The longest a delivered job can keep a worker busy: waiting for ComfyUI, then the time limit."""
    limits = [w.time_limit_s for w in registry.workflows.values() if w.time_limit_s is not None]
    return settings.comfyui_start_timeout_s + max([settings.job_time_limit_s, *limits])


def visibility_timeout_s(settings: Settings, registry: Registry) -> int:
    # Redis redelivers an unacked message after this long. A ticket names no job, so a redelivered one
    # only costs a look at the line; it is kept past the longest job so that one job's ticket is not
    # redelivered while it runs. (A thread going on from job to job holds its ticket longer: past this,
    # one ticket too many appears, which finds an empty line or the next job.)
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
        # Acked when done: a worker holds no more tickets than it has threads, so an idle worker is
        # never left waiting while a busy one sits on a ticket. A ticket of a worker that died is made
        # up for by the reconciler; the job it took goes back in line when its lease lapses.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_acks_on_failure_or_timeout=True,
        task_default_queue=settings.queue_name,
        worker_prefetch_multiplier=1,
        worker_concurrency=PIPELINE_DEPTH,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.worker_task_events,  # for Flower (WORKER_TASK_EVENTS)
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
        app.send_task(TAKE_JOB_TASK, task_id=_TASK_ID, queue=queue, producer=producer)
    (sent,) = kept
    return sent


class JobMessages:
    """Tickets: ``ticket()`` is the bytes to LPUSH onto ``list_key`` (what ``app.send_task(TAKE_JOB_TASK,
    queue=queue)`` would have pushed)."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.list_key, message = _kept_message(app, queue)
        message["properties"]["delivery_tag"] = _DELIVERY_TAG
        text = json.dumps(message)
        if text.count(_TASK_ID) < 1 or text.count(_DELIVERY_TAG) != 1:
            raise RuntimeError("Celery's task message no longer carries the task id where expected")
        self._template = text
        # What every ticket starts with (the task's name comes before its id), whoever wrote it.
        self.ticket_prefix = text[: text.index(_TASK_ID)]
        if TAKE_JOB_TASK not in self.ticket_prefix:
            raise RuntimeError("Celery's task message no longer names the task before its id")

    def ticket(self) -> str:
        return self.message(f"ticket-{uuid.uuid4().hex}")

    def message(self, task_id: str) -> str:
        if not _SAFE_ID.fullmatch(task_id):  # it goes into JSON text as it is
            raise ValueError(f"task ids are letters, digits, '-' and '_': {task_id!r}")
        return self._template.replace(_TASK_ID, task_id).replace(_DELIVERY_TAG, str(uuid.uuid4()))
