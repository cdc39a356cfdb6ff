"""A worker thread's run of takes: wait for its ComfyUI, take the next job in line, run it, and go on
with the next while jobs wait; then linger a while for the next ticket before going back to Celery."""

from __future__ import annotations

import logging
import time

from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.queue import Affinity
from comfyjobs.jobs.worker_store import Blocked, Start, Take
from comfyjobs.storage.objects import output_prefix
from comfyjobs.worker.runner import NextTake, RequeueJobError, WorkerContext, execute_job

log = logging.getLogger(__name__)

LINGER_SLICE_S = 1.0  # an idle thread's wait for the next ticket asks this often whether to stop
LINGER_MIN_WAIT_S = 0.01


def take_jobs(ctx: WorkerContext) -> int:
    """One ticket: once this worker's ComfyUI is ready (and warmed up), takes the next job in line
    (jobs.queue) and runs it, then goes on with the next while jobs wait (each later take removes one of
    the line's tickets with its job, so a busy worker does not go back to Celery between jobs, and the
    list still holds a ticket per waiting job). A later take is made with the finish of the job before,
    in its round trip, when the worker can go on then (not stopping, its ComfyUI up and warm); otherwise
    on its own, here. Once the line is empty it waits up to WORKER_LINGER_S for the next ticket on
    Celery's list itself, so a job sent to an idle worker does not go through Celery's consumer either;
    then it returns how many jobs it ran. A ticket it could not use (ComfyUI not up, the worker stopping)
    is handed on: to another worker, or to this one later. After a job put back in line (its ComfyUI or
    the object store failed under it) the run ends: the job's new ticket goes through Celery, where an
    idle worker may take it, rather than this thread taking it straight back."""
    taken = 0
    holding = True  # a ticket not used yet: Celery's, at first
    settings = ctx.settings
    start_timeout_s = settings.comfyui_start_timeout_s
    longest_s = _longest_time_limit_s(ctx)

    def take(with_ticket: bool) -> Take:
        here = ctx.on_demand.here
        loaded = ctx.models.current()
        affinity = Affinity(
            loaded, settings.affinity_max_skip, settings.affinity_max_wait_s, here.on_disk, here.lacking
        )
        start = _start(ctx, longest_s)
        return Take(ctx.worker_id, settings.job_lease_s, affinity, with_ticket, start, ctx.runs())

    def going_on() -> Take | None:  # asked as a job finishes; no wait here
        if ctx.stopping.is_set() or not ctx.comfy.is_ready() or ctx.warmup.warming(ctx.comfy.pid):
            return None
        return take(with_ticket=True)

    then = NextTake(going_on)
    looked = ctx.parking.generation()
    while True:
        if then.finished is not None and then.finished.took:
            claimed = then.finished.taken
        else:
            ready = not ctx.stopping.is_set() and ctx.comfy.wait_until_ready(start_timeout_s)
            ready = ready and ctx.warmup.ensure(ctx.thread_client(), ctx.comfy, start_timeout_s)
            if not ready or ctx.stopping.is_set():  # (asked again: the waits above can be long)
                if holding:
                    ctx.store.send_ticket()
                return taken
            claimed = ctx.store.take(take(with_ticket=not holding))
        holding = False  # used: by this take, by finding the line empty (a ticket too many), or handed on
        then = NextTake(going_on)
        if isinstance(claimed, Blocked):
            # Jobs wait that this worker cannot run (their ticket, if held, was handed on in the take):
            # wait for one it can run, holding this thread's Celery slot, then look again.
            ctx.parking.wait(since=looked)
            looked = ctx.parking.generation()
            if ctx.stopping.is_set():
                return taken
            continue
        looked = ctx.parking.generation()
        if claimed is None:
            if not _next_ticket(ctx):
                return taken
            holding = True
            continue
        taken += 1
        task_id = claimed.task_id
        with ctx.guards.guard(task_id, after=claimed.started_event) as guard:
            try:
                execute_job(task_id, ctx, guard, claimed.record, started=claimed.started, then=then)
            except RequeueJobError as exc:
                log.info("task %s is back in line: %s", task_id, exc)
                return taken


def _start(ctx: WorkerContext, longest_s: float) -> Start:
    """A take starts the job it takes. Its outputs' deletion is scheduled with the start, before any is
    stored, so that a job cut short leaves nothing behind for good: late enough for any end within its
    time limits (queued behind another job in ComfyUI, then its own run), whichever workflow it turns out
    to be (``longest_s``: the longest limit of any). A success sets it to OUTPUT_TTL_S from its end."""
    expire_at = time.time() + ctx.settings.output_ttl_s + 3 * longest_s
    return Start(ctx.settings.max_attempts, output_prefix("%s"), expire_at)


def _longest_time_limit_s(ctx: WorkerContext) -> float:
    workflows = ctx.catalog.active().registry.workflows.values()
    limits = [w.time_limit_s for w in workflows if w.time_limit_s]
    return max([ctx.settings.job_time_limit_s, *limits])


def _next_ticket(ctx: WorkerContext) -> bool:
    """Waits for the next ticket on Celery's list, up to WORKER_LINGER_S, and takes it (True). Asks in
    slices of LINGER_SLICE_S whether the worker is stopping meanwhile (a warm shutdown waits that long at
    most); Redis unavailable ends the wait (the job then waits for a ticket through Celery)."""
    deadline = time.monotonic() + ctx.settings.worker_linger_s
    try:
        while not ctx.stopping.is_set():
            left_s = deadline - time.monotonic()
            if left_s < LINGER_MIN_WAIT_S:  # (a wait Redis rounds to 0 ms would never end)
                return False
            got = ctx.store.take_ticket(min(LINGER_SLICE_S, left_s))
            if got != "timeout":
                return got == "taken"
    except QueueUnavailableError as exc:
        log.warning("stopped waiting for the next job: %s", exc)
    return False
