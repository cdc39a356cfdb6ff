"""One job, start to end, on a worker: read the record, build the graph, run it, store the outputs.

Everything here is a plain function of typed inputs; the Celery task only decodes the id and calls
``execute_job``. The record is the source of truth: each step is written to it as it happens.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from comfyjobs.comfy.client import ComfyClient, OutputFile
from comfyjobs.comfy.output_files import ComfyOutputFiles
from comfyjobs.comfy.process import ComfyProcess
from comfyjobs.errors import (
    ComfyHungError,
    ComfyJobsError,
    ComfyUnavailableError,
    JobTimeoutError,
    ModelDownloadError,
    ObjectNotFoundError,
    QueueUnavailableError,
    StorageError,
)
from comfyjobs.jobs.record import JobError, JobRecord, JobStatus, Progress, utc_now
from comfyjobs.jobs.worker_store import Finished, JobStore, JobTimes, ObjectExpiry, Take
from comfyjobs.manifests.patching import build_graph
from comfyjobs.settings import Settings
from comfyjobs.storage.objects import ObjectStore, output_prefix
from comfyjobs.storage.outputs import OutputSaver
from comfyjobs.worker.catalog import WorkerCatalog
from comfyjobs.worker.inputs import StagedInputs
from comfyjobs.worker.job_guard import Guards, JobGuard
from comfyjobs.worker.on_demand import OnDemandModels
from comfyjobs.worker.parking import Parking
from comfyjobs.worker.progress import ProgressWriter
from comfyjobs.worker.warmup import Warmup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    worker_id: str
    catalog: WorkerCatalog  # jobs are built from the catalog version they record
    store: JobStore
    comfy: ComfyProcess
    # This thread's ComfyUI client: a worker runs PIPELINE_DEPTH jobs' threads at once (one executing
    # in ComfyUI, the next queued there), each with its own HTTP session; they share one websocket.
    thread_client: Callable[[], ComfyClient]
    objects: ObjectStore
    outputs: OutputSaver
    comfy_files: ComfyOutputFiles  # ComfyUI's own copies of the outputs, deleted once done with
    guards: Guards  # leases and cancellation of the jobs running here
    warmup: Warmup  # jobs wait for each ComfyUI start's warm-up
    models: LoadedModels
    stopping: threading.Event  # set when the worker begins to shut down: no more jobs are taken
    parking: Parking  # job threads that found only jobs this worker cannot run wait there
    runs: Callable[[], frozenset[str]]  # the job classes it can run (worker.capabilities)
    on_demand: OnDemandModels  # models fetched by URL into the host's cache, linked for ComfyUI


class LoadedModels:
    """What this worker's ComfyUI has in memory, as far as jobs tell: the models of the last job that
    loaded any (model affinity prefers jobs using them). ``loads`` counts the jobs that needed others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: frozenset[str] = frozenset()
        self.loads = 0

    def current(self) -> frozenset[str]:
        with self._lock:
            return self._models

    def use(self, models: list[str]) -> None:
        with self._lock:
            if models and not set(models) <= self._models:
                self.loads += 1
                self._models = frozenset(models)

    def forget(self) -> None:
        """ComfyUI restarted: nothing is loaded."""
        with self._lock:
            self._models = frozenset()


FINISH_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class RequeueJobError(Exception):
    """The job is back to PENDING in its record (and in line, with a ticket for it)."""


class NextTake:
    """The worker's next take, made with a job's finish in the same round trip (worker.takes): ``ask``
    says what to take, or None when the worker is not to go on (stopping, its ComfyUI down or cold);
    ``finished``: the finish written (None: none was), whose ``took`` and ``taken`` tell of the take."""

    def __init__(self, ask: Callable[[], Take | None]) -> None:
        self.ask = ask
        self.finished: Finished | None = None


def handle_delivery(task_id: str, ctx: WorkerContext) -> None:
    """A message of an earlier version, naming its job. The lease comes first, before waiting for
    ComfyUI: from here on a live worker visibly has the job, so the reconciler leaves it alone; a second
    delivery of a job some live worker has is dropped here. Raises RequeueJobError to hand it back."""
    guard = ctx.guards.guard(task_id)
    if not guard.acquire():
        log.warning("task %s is with another worker; dropping this duplicate delivery", task_id)
        return
    with guard:
        if not ctx.comfy.wait_until_ready(ctx.settings.comfyui_start_timeout_s):
            # ComfyUI is down (being restarted, or failing to): hand the job back untouched.
            raise RequeueJobError("ComfyUI is not ready on this worker")
        execute_job(task_id, ctx, guard, ctx.store.get(task_id))


def execute_job(
    task_id: str,
    ctx: WorkerContext,
    guard: JobGuard,
    record: JobRecord | None,
    *,
    started: bool = False,
    then: NextTake | None = None,
) -> None:
    """Runs a job whose lease ``guard`` holds, from its ``record`` as read when it was taken; ``started``:
    the take started it too (so it has a record, not finished, with attempts left); ``then``: the next
    take, made with the job's finish if it has one."""
    if started and record is not None:
        _run_leased(task_id, ctx, record, guard, started=True, then=then)
        return
    if record is None:
        log.warning("task %s: no job record (expired or never accepted); dropping the delivery", task_id)
        ctx.store.forget_waiting(task_id)
        return
    if record.is_terminal:
        log.info("task %s already %s; not running it again", task_id, record.status)
        return
    if record.attempts >= ctx.settings.max_attempts:
        # Every earlier start was cut short (its worker lost, its ComfyUI crashed or hung): stop the loop.
        last = record.error.message if record.error else f"worker {record.worker or 'unknown'} was lost"
        message = f"gave up after {record.attempts} attempts; last: {last}"
        error = JobError(type="attempts_exhausted", message=message)
        _finish(ctx, guard, {"attempts": record.attempts}, None, then, status=JobStatus.FAILURE, error=error)
        return
    _run_leased(task_id, ctx, record, guard, then=then)


def _run_leased(
    task_id: str,
    ctx: WorkerContext,
    record: JobRecord,
    guard: JobGuard,
    *,
    started: bool = False,
    then: NextTake | None = None,
) -> None:
    """``record``: as it was before the start; ``started``: the take started the job already."""
    if guard.stopped:  # cancelled, or the lease lost, while waiting for ComfyUI
        log.info("task %s: %s before it started; not running it", task_id, guard.stopped)
        return
    before = record.attempts
    attempt = before + 1
    mine = {"attempts": attempt, "worker": ctx.worker_id}  # every later write: only while still ours
    prefix, ttl_s = output_prefix(task_id), ctx.settings.output_ttl_s
    time_limit_s = _time_limit_s(ctx, record)
    if not started:  # (a delivery of an earlier version: started here, as a take would have; see _start)
        started = ctx.store.update(
            task_id,
            expect={"attempts": before},
            expire=(prefix, time.time() + ttl_s + 3 * time_limit_s),
            status=JobStatus.STARTED,
            started_at=utc_now(),
            worker=ctx.worker_id,
            attempts=attempt,
            error=None,  # what cut the previous attempt short, if any, is history now
        )
    if not started:  # cancelled (or expired) since it was read
        log.info("task %s finished before it could start; not running it", task_id)
        return
    queue_wait_s = (utc_now() - record.created_at).total_seconds() if attempt == 1 else None
    progress = ProgressWriter(ctx.store, task_id, mine, ctx.settings.progress_interval_s)
    try:
        registry = None if record.graph is not None else ctx.catalog.registry(record.catalog_version)
        workflow = None if registry is None else registry.workflow(record.workflow_id)
        # The task already waited for ComfyUI before taking the job; only a crash since then is left.
        if not ctx.comfy.is_ready():
            raise ComfyUnavailableError("ComfyUI is not running on this worker")
        client = ctx.thread_client()

        def downloading(done: int, total: int | None) -> None:
            if guard.stopped:  # (the part downloaded stays for the next job to resume)
                raise ModelDownloadError(f"download stopped: {guard.stopped}")
            progress.downloading(done, total)

        with (
            ctx.on_demand.prepared(workflow, record.params, downloading),
            StagedInputs(client, ctx.objects, ctx.comfy.instance.input_dir) as staged,
        ):
            if record.graph is not None:  # RAW_GRAPH: run as given (checked by the API when accepted)
                graph = staged.stage_graph(record.graph, record.inputs)
            else:
                assert registry is not None and workflow is not None  # not a raw graph: a manifest's
                graph = build_graph(workflow, staged.stage(record.params, record.inputs), registry.loras)
            try:
                ctx.models.use(record.models)
                ran_on = ctx.comfy.restarts  # the start of ComfyUI that saves the outputs
                files = client.run(
                    graph,
                    on_event=progress,
                    timeout_s=time_limit_s,
                    is_alive=ctx.comfy.is_running,
                    control=guard,
                    hang_timeout_s=ctx.settings.comfyui_hang_timeout_s,
                )
            except JobTimeoutError:
                raise JobTimeoutError(f"timed out after {time_limit_s:g} s") from None
            finally:
                progress.stop()  # its times end with ComfyUI's part, not with storing the outputs

        def fetch(item: OutputFile, dest: Path) -> None:
            if not ctx.comfy.instance.copy_output(item, dest):
                client.download(item, dest)

        with ctx.comfy_files.reported(files, ran_on):  # (ComfyUI's copies: kept until stored)
            if guard.stopped:
                log.info("task %s: stopped (%s); its outputs are not kept", task_id, guard.stopped)
                return
            outputs = ctx.outputs.save_all(task_id, files, fetch, retried=attempt > 1)
        if guard.stopped:  # cancelled while its outputs were stored: the outcome would be refused
            log.info("task %s: stopped (%s) as it ended", task_id, guard.stopped)
            return
    except Exception as exc:
        if guard.stopped:
            log.info("task %s: stopped (%s): %s", task_id, guard.stopped, exc)
            return
        if isinstance(exc, ComfyHungError):
            ctx.comfy.kill()  # the worker's ComfyUI supervisor starts a fresh one
        passing = isinstance(exc, ComfyUnavailableError | QueueUnavailableError) or (
            isinstance(exc, StorageError) and not isinstance(exc, ObjectNotFoundError)
        )
        if passing and attempt < ctx.settings.max_attempts:
            # Not the job's fault: ComfyUI crashed or hung under it, or the object store was away.
            # Back in line for another go.
            requeued = ctx.store.update(
                task_id,
                expect=mine,
                status=JobStatus.PENDING,
                worker=None,
                progress=Progress(),
                error=JobError.from_exception(exc),
            )
            if requeued:
                _record_times(ctx, _times(record, queue_wait_s, progress, succeeded=False))
                log.warning("task %s: %s; attempt %d of %d, re-queued", task_id, exc, attempt,
                            ctx.settings.max_attempts)  # fmt: skip
                raise RequeueJobError(str(exc)) from exc
        if isinstance(exc, ComfyJobsError):
            log.info("task %s failed: %s", task_id, exc)
        else:
            log.exception("task %s failed unexpectedly", task_id)
        times = _times(record, queue_wait_s, progress, succeeded=False)
        _finish(ctx, guard, mine, times, then, status=JobStatus.FAILURE, error=JobError.from_exception(exc))
        return
    final = progress.last.model_copy(update={"value": progress.last.max, "percent": 100.0})
    expire_at = utc_now() + timedelta(seconds=ttl_s)
    _finish(
        ctx,
        guard,
        mine,
        _times(record, queue_wait_s, progress, succeeded=True),
        then,
        expire=(prefix, expire_at.timestamp()),
        status=JobStatus.SUCCESS,
        outputs=outputs,
        outputs_expire_at=expire_at,
        progress=final,
    )
    log.info("task %s done: %d output(s)", task_id, len(outputs))


def _time_limit_s(ctx: WorkerContext, record: JobRecord) -> float:
    """How long the job may run in ComfyUI: its workflow's limit, or JOB_TIME_LIMIT_S."""
    workflow = None
    if record.graph is None:
        with contextlib.suppress(ComfyJobsError):  # (its version is gone: the job fails as it starts)
            workflow = ctx.catalog.registry(record.catalog_version).workflows.get(record.workflow_id)
    return (workflow and workflow.time_limit_s) or ctx.settings.job_time_limit_s


def _times(
    record: JobRecord, queue_wait_s: float | None, progress: ProgressWriter, *, succeeded: bool
) -> JobTimes:
    """The job's times (jobs.worker_store), for the ETAs and the metrics: the run's only if it succeeded."""
    run_s = progress.run_s() if succeeded else None
    return JobTimes(record.workflow_id, queue_wait_s, run_s, progress.node_times())


def _record_times(ctx: WorkerContext, times: JobTimes) -> None:
    """Best effort: a job's times are not worth failing anything for."""
    try:
        ctx.store.record_times(times)
    except QueueUnavailableError as exc:
        log.warning("job times of %s were not recorded: %s", times.workflow_id, exc)


def _finish(
    ctx: WorkerContext,
    guard: JobGuard,
    expect: dict[str, Any],
    times: JobTimes | None,
    then: NextTake | None = None,
    expire: ObjectExpiry | None = None,
    **fields: Any,
) -> None:
    """The job's end, in one round trip: its times (best effort, recorded before the outcome, so
    whoever sees the job finished sees it counted), its outcome, its lease let go, and the worker's next
    take (``then``, if it goes on). Rides out a short Redis outage (the lease lapses meanwhile only after
    JOB_LEASE_S), since giving up here would have the job run again for nothing; after a failed try the
    times and the take are left out (they may have been made: a job taken then waits for its lease to
    lapse, and the reconciler puts it back in line)."""
    task_id = guard.task_id
    guard.finishing = True  # nothing stops it any more (its lease is still renewed until it is let go)
    take = then.ask() if then is not None else None
    for delay_s in (*FINISH_RETRY_DELAYS_S, None):
        try:
            finished = ctx.store.finish(
                task_id,
                ctx.worker_id,
                expect=expect,
                times=times,
                expire=expire,
                then=take,
                finished_at=utc_now(),
                **fields,
            )
            guard.released = True
            if then is not None:
                then.finished = finished
            if not finished.written:
                log.warning("task %s: outcome not recorded (cancelled, or the job was taken back)", task_id)
            return
        except QueueUnavailableError as exc:
            if delay_s is None:
                raise
            times, take = None, None
            log.warning("task %s: outcome not recorded yet (%s); again in %.0f s", task_id, exc, delay_s)
            time.sleep(delay_s)  # back-off while Redis restarts; nothing to wait on but the clock
