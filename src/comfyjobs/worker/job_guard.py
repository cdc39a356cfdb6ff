"""What watches over a job while it runs on this worker: its lease, and its cancellation.

Lease: a key naming this worker, with a short TTL (JOB_LEASE_S), taken before the job starts and renewed
while it runs. Taking it fails if another worker runs the same job (a duplicate delivery): the job runs
once. If this worker dies the lease lapses and the API's reconciler puts the job back in line.

Cancellation: DELETE /tasks/{id} marks the record CANCELLED (a final state, so nothing the worker writes
afterwards lands). The guard blocks on the job's event stream (the one the API's SSE reads) and, on that
change, takes the prompt out of ComfyUI: removed from its queue and interrupted. ComfyUI reports the
interruption, ``ComfyClient.run`` returns, and the worker takes its next job. A lease this worker lost
(Redis was away longer than JOB_LEASE_S, and the job may be running elsewhere now) stops the prompt the
same way.

One thread does both: each blocking read on the stream lasts until the next renewal is due.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import JobStatus
from comfyjobs.jobs.worker_store import JobStore

log = logging.getLogger(__name__)

# Longest single read on the stream: below redis-py's default socket timeout (5 s), so a quiet stream is
# not taken for a dead connection.
MAX_BLOCK_S = 2.0


class JobGuard:
    def __init__(
        self,
        store: JobStore,
        task_id: str,
        worker_id: str,
        lease_s: float,
        cancel_prompt: Callable[[str], None],
    ) -> None:
        self._store = store
        self._task_id = task_id
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._cancel_prompt = cancel_prompt
        self._lock = threading.Lock()
        self._prompt_id: str | None = None
        self._stop_reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"job-guard-{task_id}", daemon=True)

    def acquire(self) -> bool:
        """Takes the lease; False if another worker holds it (this delivery is a duplicate)."""
        return self._store.acquire_lease(self._task_id, self._worker_id, self._lease_s)

    @property
    def cancelled(self) -> bool:
        return self._stop_reason == "cancelled"

    @property
    def stopped(self) -> str | None:
        """Why the job was stopped from outside ("cancelled", "lease lost"), or None."""
        return self._stop_reason

    def __enter__(self) -> JobGuard:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Not joined: the thread may sit in a blocking read for up to MAX_BLOCK_S, and the worker's next
        # job should not wait for that. It checks `_done` after every read and then acts on nothing.
        self._done.set()
        try:
            self._store.release_lease(self._task_id, self._worker_id)
        except QueueUnavailableError as exc_:
            log.warning("task %s: lease not released (it lapses by itself): %s", self._task_id, exc_)

    def submitted(self, prompt_id: str) -> None:
        """Called by the ComfyUI client once the prompt is queued there."""
        with self._lock:
            self._prompt_id = prompt_id
            stop_now = self._stop_reason is not None  # stopped before ComfyUI had the prompt
        if stop_now:
            self._cancel_prompt(prompt_id)

    def _watch(self) -> None:
        cursor = "0-0"
        block_s = min(MAX_BLOCK_S, self._lease_s / 3)
        while not self._done.is_set():
            try:
                events = self._store.read_events(self._task_id, cursor, block_s)
                if self._done.is_set():
                    return  # the job ended (and its lease was released) while we read
                if not self._store.renew_lease(self._task_id, self._worker_id, self._lease_s):
                    self._stop("lease lost")
                    return
            except QueueUnavailableError as exc:
                log.warning("task %s: cannot reach Redis to guard the job: %s", self._task_id, exc)
                self._done.wait(block_s)  # Redis is restarting; try again shortly unless the job ended
                continue
            for event in events:
                cursor = event.id
                if event.changes.get("status") == JobStatus.CANCELLED:
                    self._stop("cancelled")
                    return

    def _stop(self, reason: str) -> None:
        log.info("task %s: %s; stopping its prompt in ComfyUI", self._task_id, reason)
        with self._lock:
            self._stop_reason = reason
            prompt_id = self._prompt_id
        if prompt_id is not None:
            self._cancel_prompt(prompt_id)
