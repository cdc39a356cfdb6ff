"""One job, start to end, on a worker: read the record, build the graph, run it, store the outputs.

Everything here is a plain function of typed inputs; the Celery task only decodes the id and calls
``execute_job``. The record is the source of truth: each step is written to it as it happens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from comfyjobs.comfy.client import ComfyClient, ComfyEvent
from comfyjobs.comfy.process import ComfyProcess
from comfyjobs.errors import ComfyJobsError, ComfyUnavailableError, JobTimeoutError, QueueUnavailableError
from comfyjobs.jobs.record import JobError, JobStatus, Progress, utc_now
from comfyjobs.jobs.store import JobStore
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Registry
from comfyjobs.settings import Settings
from comfyjobs.storage.outputs import OutputStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    worker_id: str
    registry: Registry
    store: JobStore
    comfy: ComfyProcess
    client: ComfyClient
    outputs: OutputStore


class ProgressWriter:
    """Turns ComfyUI's events into progress on the record."""

    def __init__(self, store: JobStore, task_id: str) -> None:
        self._store = store
        self._task_id = task_id
        self._progress = Progress()

    @property
    def last(self) -> Progress:
        return self._progress

    def __call__(self, event: ComfyEvent) -> None:
        try:
            self._write(event)
        except QueueUnavailableError as exc:  # progress is best effort; the job's outcome is not
            log.warning("task %s: progress not recorded: %s", self._task_id, exc)

    def _write(self, event: ComfyEvent) -> None:
        if event.kind == "started":
            self._store.update(self._task_id, status=JobStatus.PROGRESS)
            return
        if event.kind == "node":
            # Steps done so far stay: a decode after the sampler is not "0 %" again.
            self._progress = self._progress.model_copy(
                update={"node": event.node_id, "node_type": event.node_type}
            )
        else:
            value, maximum = event.value or 0, event.max or 0
            percent = round(100.0 * value / maximum, 1) if maximum else 0.0
            self._progress = Progress(
                value=value, max=maximum, percent=percent, node=event.node_id, node_type=event.node_type
            )
        self._store.update(self._task_id, status=JobStatus.PROGRESS, progress=self._progress)


def execute_job(task_id: str, ctx: WorkerContext) -> None:
    record = ctx.store.get(task_id)
    if record is None:
        log.warning("task %s: no job record (expired or never accepted); dropping the delivery", task_id)
        ctx.store.forget_waiting(task_id)
        return
    if record.is_terminal:
        log.info("task %s already %s; not running it again", task_id, record.status)
        return
    ctx.store.update(
        task_id,
        status=JobStatus.STARTED,
        started_at=utc_now(),
        worker=ctx.worker_id,
        attempts=record.attempts + 1,
    )
    progress = ProgressWriter(ctx.store, task_id)
    try:
        workflow = ctx.registry.workflow(record.workflow_id)
        graph = build_graph(workflow, record.params, ctx.registry.loras)
        # The task already waited for ComfyUI before taking the job; only a crash since then is left.
        if not ctx.comfy.is_ready():
            raise ComfyUnavailableError("ComfyUI is not running on this worker")
        time_limit_s = workflow.time_limit_s or ctx.settings.job_time_limit_s
        try:
            files = ctx.client.run(
                graph, on_event=progress, timeout_s=time_limit_s, is_alive=ctx.comfy.is_running
            )
        except JobTimeoutError:
            raise JobTimeoutError(f"timed out after {time_limit_s:g} s") from None
        outputs = ctx.outputs.save_all(task_id, files, ctx.client.download)
    except Exception as exc:
        if isinstance(exc, ComfyJobsError):
            log.info("task %s failed: %s", task_id, exc)
        else:
            log.exception("task %s failed unexpectedly", task_id)
        _finish(ctx, task_id, status=JobStatus.FAILURE, error=JobError.from_exception(exc))
        return
    final = progress.last.model_copy(update={"value": progress.last.max, "percent": 100.0})
    _finish(ctx, task_id, status=JobStatus.SUCCESS, outputs=outputs, progress=final)
    log.info("task %s done: %d output(s)", task_id, len(outputs))


def _finish(ctx: WorkerContext, task_id: str, **fields: Any) -> None:
    ctx.store.update(task_id, finished_at=utc_now(), **fields)
