"""Which workflows the running workers can execute, from their heartbeats (see comfy.doctor)."""

from __future__ import annotations

import redis.asyncio as aioredis
from pydantic import BaseModel

from comfyjobs.api.refreshed import Refreshed
from comfyjobs.catalog.bundle import short
from comfyjobs.heartbeat import WorkerBeat, live_workers, of_queue
from comfyjobs.jobs.queue import job_class
from comfyjobs.jobs.record import JobRecord, JobStatus

FLEET_MAX_AGE_S = 1.0  # heartbeats come every few seconds: a second-old view of them is as good as new


class FleetView:
    """The live workers' heartbeats for the submit path, read from Redis at most once per ``max_age_s``
    by this API process (not once per request): what workers can run changes when they start, stop or
    restart their ComfyUI, not from one request to the next."""

    def __init__(self, client: aioredis.Redis, max_age_s: float = FLEET_MAX_AGE_S) -> None:
        self._beats = Refreshed(lambda: live_workers(client), max_age_s)

    async def beats(self) -> list[WorkerBeat]:
        return await self._beats.get()


class Availability(BaseModel):
    ready: bool
    workers_ready: int
    workers_checked: int
    missing_nodes: list[str] = []
    missing_models: list[str] = []
    problems: list[str] = []


async def workflow_availability(client: aioredis.Redis) -> dict[str, Availability]:
    """Per workflow id, what the live workers found; a workflow no worker has checked yet is absent."""
    return availability_of(await live_workers(client))


def availability_of(beats: list[WorkerBeat]) -> dict[str, Availability]:
    per_workflow: dict[str, list[tuple[bool, list[str], list[str], list[str]]]] = {}
    for beat in beats:
        for workflow_id, found in beat.workflows.items():
            per_workflow.setdefault(workflow_id, []).append(
                (found.ready, found.missing_nodes, found.missing_models, found.problems)
            )
    result = {}
    for workflow_id, reports in per_workflow.items():
        ready = [r for r in reports if r[0]]
        nodes = sorted({n for r in reports if not r[0] for n in r[1]})
        models = sorted({m for r in reports if not r[0] for m in r[2]})
        problems = sorted({p for r in reports if not r[0] for p in r[3]})
        result[workflow_id] = Availability(
            ready=bool(ready),
            workers_ready=len(ready),
            workers_checked=len(reports),
            missing_nodes=[] if ready else nodes,
            missing_models=[] if ready else models,
            problems=[] if ready else problems,
        )
    return result


def blocked_reason(beats: list[WorkerBeat], record: JobRecord, queue: str) -> str | None:
    """Why no live worker of ``queue`` can run this waiting job (from what each advertised:
    worker.capabilities); None when one can, or when none has said yet what it runs (it may, once up)."""
    checked = [b for b in of_queue(beats, queue) if b.runs]  # (earlier versions' beats have no runs)
    if record.status != JobStatus.PENDING or not checked:
        return None
    cls = job_class(record.workflow_id, record.catalog_version)
    if any(cls in b.runs for b in checked):
        return None
    version = record.catalog_version
    unchecked = f"not checked against catalog {short(version)} yet" if version else ""
    reasons = sorted({b.cannot.get(cls, unchecked) for b in checked} - {""})
    name = f"{record.workflow_id}@{short(version)}" if version else record.workflow_id
    return f"no worker can run {name}: {'; '.join(reasons) or 'not among its workflows'}"
