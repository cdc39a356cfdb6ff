"""What watches over the jobs a worker runs: their leases, and their cancellation.

Lease: a key naming this worker, with a short TTL (JOB_LEASE_S), taken before a job starts (by the take,
or by ``JobGuard.acquire``) and renewed while it runs. Taking it fails if another worker runs the same job
(a duplicate delivery): the job runs once. If this worker dies the lease lapses and the API's reconciler
puts the job back in line.

Cancellation: DELETE /tasks/{id} marks the record CANCELLED (a final state, so nothing the worker writes
afterwards lands). The watcher blocks on the running jobs' event streams (the ones the API's SSE reads)
and, on that change, takes the prompt out of ComfyUI: removed from its queue and interrupted. ComfyUI
reports the interruption, ``ComfyClient.run`` returns, and the worker takes its next job. A lease this
worker lost (Redis was away longer than JOB_LEASE_S, and the job may be running elsewhere now) stops the
prompt the same way.

Cancels go to ComfyUI from one thread, in the order the stops were seen, each prompt once its POST is
over, and the prompts stopped together in one call that deletes them all before interrupting any: an
interrupt lets ComfyUI start its next prompt, which must not be one being cancelled (a job stopped before
its prompt is sent never sends it).

One thread per worker does both for all its jobs (``Guards``): one blocking read over every job's stream
lasts until the next renewal is due, and the due leases are renewed together. A job's ``JobGuard`` is
its handle: entered when the job starts, left when it ends (which releases the lease). A guard entered
during a read is watched from the next one (at most a read's length later), from the start of its
stream, so a cancellation in between is not missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import JobStatus
from comfyjobs.jobs.store import EventId
from comfyjobs.jobs.worker_store import JobStore

log = logging.getLogger(__name__)

# Longest single read on the streams: a third of a lease at most, so renewals are never late.
MAX_BLOCK_S = 2.0
POST_WAIT_S = 30.0  # a cancel waits this long at most for its prompt's POST (ComfyClient's own limit)


class JobGuard:
    """One job's lease and cancellation, watched by its worker's ``Guards``."""

    def __init__(self, guards: Guards, task_id: str, after: EventId | None = None) -> None:
        """``after``: the job's events up to this one need no look (the event of its start, by the take);
        None: all of them."""
        self._guards = guards
        self.task_id = task_id
        self.cursor: EventId = after or "0-0"  # the watcher's place in the job's event stream
        self.renewed_at = time.monotonic()  # the lease was just taken
        self._lock = threading.Lock()
        self._prompt_id: str | None = None
        self._posted = threading.Event()  # set: no POST of its prompt under way
        self._posted.set()
        self._stop_reason: str | None = None
        self.done = False  # its job ended: nothing is stopped or renewed any more
        self.finishing = False  # its outcome is being written: nothing is stopped any more
        self.released = False  # its lease was let go (with the job's outcome)

    def acquire(self) -> bool:
        """Takes the lease; False if another worker holds it (this delivery is a duplicate)."""
        g = self._guards
        taken = g.store.acquire_lease(self.task_id, g.worker_id, g.lease_s)
        self.renewed_at = time.monotonic()
        return taken

    @property
    def stopped(self) -> str | None:
        """Why the job was stopped from outside ("cancelled", "lease lost"), or None."""
        return self._stop_reason

    def __enter__(self) -> JobGuard:
        self._guards.watch(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.done = True
        self._guards.unwatch(self)
        if self.released:
            return
        try:
            self._guards.store.release_lease(self.task_id, self._guards.worker_id)
        except QueueUnavailableError as exc_:
            log.warning("task %s: lease not released (it lapses by itself): %s", self.task_id, exc_)

    def submitting(self, prompt_id: str) -> bool:
        """Asked by the ComfyUI client just before it sends the prompt: False if the job was stopped (it
        is not sent). A stop from here on waits for the POST to be over (``submitted``) before its prompt
        is deleted from ComfyUI's queue, so no interrupt sent meanwhile can let ComfyUI start it."""
        with self._lock:
            if self._stop_reason is not None:
                return False
            self._prompt_id = prompt_id
            self._posted.clear()
            return True

    def submitted(self, _prompt_id: str) -> None:
        """Told by the ComfyUI client that the POST is over (queued, or failed)."""
        self._posted.set()

    def stop(self, reason: str) -> JobGuard | None:
        """Marks the job stopped; returns this guard if ComfyUI has (or is being sent) its prompt, for
        the caller to cancel it (``Guards.cancel``); None if the job is done, or its prompt will never
        be sent (``submitting`` refuses it)."""
        if self.done or self.finishing:  # (finishing: a renewal after the outcome let the lease go)
            return None
        log.info("task %s: %s; stopping its prompt in ComfyUI", self.task_id, reason)
        with self._lock:
            self._stop_reason = reason
            return self if self._prompt_id is not None else None

    def posted_prompt(self, timeout_s: float) -> str | None:
        """Its prompt's id, once no POST of it is under way (waiting at most ``timeout_s``)."""
        self._posted.wait(timeout_s)
        return self._prompt_id


class Guards:
    """The watcher: one thread, started and stopped with the worker."""

    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        lease_s: float,
        cancel_prompts: Callable[[list[str]], None],
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.lease_s = lease_s
        # Off the watcher's thread: ComfyUI slow to answer a cancel must not hold up lease renewals. One
        # thread, so cancels reach ComfyUI in the order they were asked for, each whole (a queued prompt
        # is deleted before a running one's interrupt can let ComfyUI start it).
        self._cancels = ThreadPoolExecutor(1, thread_name_prefix="job-cancel")
        self._cancel_prompts = cancel_prompts
        self._block_s = min(MAX_BLOCK_S, lease_s / 3)
        self._changed = threading.Condition()
        self._guards: dict[str, JobGuard] = {}
        self.ended = 0  # jobs that ran here and are over (their guard let go), for the heartbeat
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-guards", daemon=True)

    def guard(self, task_id: str, after: EventId | None = None) -> JobGuard:
        return JobGuard(self, task_id, after)

    def cancel(self, stopped: list[JobGuard | None]) -> None:
        """Cancels the prompts of these stopped jobs in ComfyUI, together: each once its POST is over."""
        guards = [g for g in stopped if g is not None]
        if guards:
            self._cancels.submit(self._cancel_now, guards)

    def _cancel_now(self, guards: list[JobGuard]) -> None:
        prompt_ids = [p for g in guards if (p := g.posted_prompt(POST_WAIT_S)) is not None]
        if prompt_ids:
            self._cancel_prompts(prompt_ids)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        self._cancels.shutdown(wait=False)

    def watch(self, guard: JobGuard) -> None:
        with self._changed:
            self._guards[guard.task_id] = guard
            self._changed.notify_all()

    def unwatch(self, guard: JobGuard) -> None:
        with self._changed:
            if self._guards.get(guard.task_id) is guard:
                del self._guards[guard.task_id]
                self.ended += 1

    def running(self) -> list[str]:
        """The ids of the jobs running here now."""
        with self._changed:
            return sorted(self._guards)

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._changed:
                while not self._guards and not self._stopping.is_set():
                    self._changed.wait()  # no job runs: nothing to read or renew
                watched = list(self._guards.values())
            if watched:
                try:
                    self._once(watched)
                except QueueUnavailableError as exc:
                    log.warning("cannot reach Redis to guard the jobs: %s", exc)
                    self._stopping.wait(self._block_s)  # Redis is restarting; again shortly
                except Exception:  # this one thread guards every job: it must outlive any one error
                    log.exception("guarding the jobs failed; again shortly")
                    self._stopping.wait(self._block_s)

    def _cancelled(self, guards: list[JobGuard], block_s: float | None) -> list[JobGuard | None]:
        """One read over these jobs' streams (waiting up to ``block_s``; None: not at all): the stops of
        those cancelled."""
        events = self.store.read_events_of({g.task_id: g.cursor for g in guards}, block_s)
        by_task = {g.task_id: g for g in guards}
        stopped: list[JobGuard | None] = []
        for task_id, entries in events.items():
            guard = by_task[task_id]
            for event in entries:
                guard.cursor = event.id
                if event.changes.get("status") == JobStatus.CANCELLED:
                    stopped.append(guard.stop("cancelled"))
        return stopped

    def _once(self, watched: list[JobGuard]) -> None:
        """One blocking read over the watched jobs' streams, then the renewals due."""
        stopped = self._cancelled(watched, self._block_s)  # cancelled together: every delete first
        if stopped:
            # Jobs guarded since the read began were not in it: one cancelled before these (the job
            # queued in ComfyUI behind a running one, cancelled first) must be deleted in the same call,
            # or this interrupt lets ComfyUI start it.
            read = {id(g) for g in watched}
            with self._changed:
                joined = [g for g in self._guards.values() if id(g) not in read]
            if joined:
                stopped += self._cancelled(joined, None)
        self.cancel(stopped)
        now = time.monotonic()
        due = [g for g in watched if not g.done and g.stopped is None and now - g.renewed_at >= self._block_s]
        if not due:
            return
        renewed = self.store.renew_leases([g.task_id for g in due], self.worker_id, self.lease_s)
        lost: list[JobGuard | None] = []
        for guard, held in zip(due, renewed, strict=True):
            guard.renewed_at = now
            if not held:
                lost.append(guard.stop("lease lost"))  # (a guard left meanwhile released it: no stop)
        self.cancel(lost)
