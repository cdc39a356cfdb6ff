"""Estimated start and finish of a task, from recent run times per workflow (kept by the workers, see
JobStore.record_run_time), the live workers, the task's place in line and its sampler's step rate.

Estimates, not promises: a waiting task starts after the jobs ahead of it, shared among the live
workers, each taking the recent average; a running one finishes at its sampler's pace when it reports
steps, else after its workflow's recent run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from comfyjobs.api.availability import FleetView
from comfyjobs.api.refreshed import Refreshed
from comfyjobs.jobs.record import JobRecord, JobStatus, utc_now
from comfyjobs.jobs.store import AsyncJobStore, QueuePlace

MAX_AGE_S = 1.0  # run times move slowly: one read a second per API process


@dataclass(frozen=True)
class Eta:
    start_at: datetime | None = None
    finish_at: datetime | None = None


@dataclass(frozen=True)
class EtaModel:
    run_times_s: dict[str, float]  # workflow id (and "*") -> recent run time
    workers: int

    def estimate(self, record: JobRecord, place: QueuePlace | None, now: datetime | None = None) -> Eta:
        now = now or utc_now()
        own = self.run_times_s.get(record.workflow_id, self.run_times_s.get("*"))
        if record.status == JobStatus.PENDING:
            typical = self.run_times_s.get("*")
            if place is None or place.position is None or typical is None or own is None:
                return Eta()
            start = now + timedelta(seconds=place.position / max(1, self.workers) * typical)
            return Eta(start_at=start, finish_at=start + timedelta(seconds=own))
        if record.status in (JobStatus.STARTED, JobStatus.PROGRESS) and record.started_at is not None:
            p = record.progress
            elapsed_s = max(0.0, (now - record.started_at).total_seconds())
            if p.max and 0 < p.value < p.max:
                finish = now + timedelta(seconds=elapsed_s * (p.max - p.value) / p.value)
            elif own is not None:
                finish = max(now, record.started_at + timedelta(seconds=own))
            else:
                return Eta(start_at=record.started_at)
            return Eta(start_at=record.started_at, finish_at=finish)
        return Eta()


class Estimator:
    def __init__(self, store: AsyncJobStore, fleet: FleetView) -> None:
        self._store = store
        self._fleet = fleet
        self._model = Refreshed(self._read, MAX_AGE_S)

    async def _read(self) -> EtaModel:
        ready = [b for b in await self._fleet.beats() if b.comfyui_ready]
        return EtaModel(await self._store.run_times(), len(ready))

    async def model(self) -> EtaModel:
        return await self._model.get()
