"""Finds accepted jobs that nothing will run any more, and puts them back in line.

Two ways a job can be stranded, neither announced by any event (that is why this looks periodically):
  - running, but its worker was lost (SIGKILL, out of memory, machine gone): its lease lapsed. The record
    goes back to PENDING, back in its place in line, with a ticket; the next start counts as another
    attempt, and after MAX_ATTEMPTS the worker ends it in FAILURE.
  - waiting, but its ticket is gone: taken by a worker that died before it took a job, or lost with Redis
    (in the last second before a machine crash: append-only, fsync every second). When jobs have waited
    longer than a grace period and Celery's list holds fewer tickets than jobs wait, tickets are sent to
    make up the difference (only their number matters: see jobs.delivery).
A job runs once: a worker takes it out of line and takes its lease in one script, and a job already final
is skipped.

Runs in the API process (an asyncio task); with several APIs, the one holding the leader key does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import JobError, JobStatus, Progress
from comfyjobs.jobs.store import AsyncJobStore

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    lost_workers: list[str] = field(default_factory=list)  # running jobs put back in line
    lost_tickets: int = 0  # tickets sent again: fewer in Celery's list than jobs waiting past the grace


class Reconciler:
    def __init__(
        self,
        client: aioredis.Redis,
        store: AsyncJobStore,
        queue: str,
        interval_s: float,
    ) -> None:
        self._redis = client
        self._store = store
        self._queue = queue
        self._interval_s = interval_s
        # A job waits at least this long before a missing message counts as lost: sending a message and
        # a worker moving it from the queue to "unacked" are not atomic with the record.
        self.message_grace_s = max(30.0, 3 * interval_s)
        self._instance = uuid.uuid4().hex
        self._stopping = asyncio.Event()
        self._leader_key = keys.reconciler_leader(queue)

    def stop(self) -> None:
        self._stopping.set()

    async def run_forever(self) -> None:
        """Until ``stop()``. A stop flag rather than task cancellation: a cancel landing inside a Redis
        call can be turned into a connection error by the client and swallowed by the handlers below."""
        while not self._stopping.is_set():
            try:
                if await self._lead():
                    found = await self.reconcile_once()
                    if found.lost_workers or found.lost_tickets:
                        log.warning(
                            "reconciler: re-queued jobs of lost workers %s; sent %d lost tickets again",
                            found.lost_workers,
                            found.lost_tickets,
                        )
            except (QueueUnavailableError, redis.RedisError) as exc:
                log.warning("reconciler: Redis unavailable (%s); next try in %.0f s", exc, self._interval_s)
            except Exception:  # one odd record or message must not end recovery for good
                log.exception("reconciler: pass failed; next try in %.0f s", self._interval_s)
            # A timer: a lapsed lease or a lost message sends no event.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    async def _lead(self) -> bool:
        ttl_ms = int(self._interval_s * 3 * 1000)
        if await self._redis.set(self._leader_key, self._instance, nx=True, px=ttl_ms):
            return True
        if await self._redis.get(self._leader_key) == self._instance.encode():
            await self._redis.pexpire(self._leader_key, ttl_ms)
            return True
        return False

    async def reconcile_once(self) -> Reconciled:
        found = Reconciled()
        for task_id in await self._store.running_ids():
            if await self._redis.exists(keys.job_lease(task_id)):
                continue
            record = await self._store.get(task_id)
            if record is not None and record.status == JobStatus.PENDING:
                # Taken out of line by a worker that was lost before it started the job.
                if await self._store.update(
                    task_id, expect={"attempts": record.attempts}, status=JobStatus.PENDING
                ):
                    found.lost_workers.append(task_id)
                continue
            if record is None or record.status not in (JobStatus.STARTED, JobStatus.PROGRESS):
                await self._store.forget_running(task_id)
                continue
            requeued = await self._store.update(
                task_id,
                expect={"attempts": record.attempts, "worker": record.worker},
                status=JobStatus.PENDING,
                worker=None,
                progress=Progress(),
                error=JobError(
                    type="worker_lost", message=f"worker {record.worker} was lost while running it"
                ),
            )
            if requeued:  # back in line, with a ticket (the update does both)
                found.lost_workers.append(task_id)
        stale = await self._store.waiting_ids(before=time.time() - self.message_grace_s)
        if stale:
            # Tickets name no job: only their number matters (see jobs.delivery).
            found.lost_tickets = await self._store.top_up_tickets(await self._store.waiting(), len(stale))
        return found
