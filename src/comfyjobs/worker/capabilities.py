"""What a worker can run, as the take understands it: job classes, ``<workflow>@<catalog version>``
(jobs.queue ``job_class``), for every version kept in Redis (jobs built from an older one may still
wait), each workflow checked against this worker's ComfyUI (`/object_info`: node classes, inputs, the
model files it lists) and its WORKER_LABELS; and, for the others, why not (shown by a blocked job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyjobs.catalog.bundle import short
from comfyjobs.comfy.doctor import WorkflowAvailability, check_workflow
from comfyjobs.errors import ComfyJobsError
from comfyjobs.jobs.queue import job_class
from comfyjobs.jobs.record import RAW_GRAPH
from comfyjobs.manifests.registry import Workflow
from comfyjobs.manifests.schema import ModelSpec
from comfyjobs.worker.catalog import WorkerCatalog

log = logging.getLogger(__name__)

RAW_GRAPH_CLASS = job_class(RAW_GRAPH, None)  # raw graphs (the v2 API) are checked when accepted


@dataclass(frozen=True)
class Capabilities:
    runs: frozenset[str] = frozenset({RAW_GRAPH_CLASS})
    cannot: dict[str, str] = field(default_factory=dict)  # class -> why this worker cannot run it


def why_not(found: WorkflowAvailability, workflow: Workflow, labels: frozenset[str]) -> str | None:
    """Why a worker with ``labels`` whose ComfyUI gave ``found`` cannot run ``workflow``; None: it can."""
    reasons = []
    if found.missing_models:
        reasons.append(f"missing model{'s' if len(found.missing_models) > 1 else ''} "
                       + ", ".join(found.missing_models))  # fmt: skip
    if found.missing_nodes:
        reasons.append("missing node classes " + ", ".join(found.missing_nodes))
    reasons += found.problems
    lacking = sorted(workflow.labels - labels)
    if lacking:
        held = ", ".join(sorted(labels)) or "none"
        reasons.append(f"needs labels {', '.join(lacking)} (this worker has: {held})")
    return "; ".join(reasons) or None


Fetchable = Callable[[ModelSpec], bool]  # whether this worker may download a listed model (its URL)


def _without_fetchable(
    found: WorkflowAvailability, workflow: Workflow, fetchable: Fetchable
) -> WorkflowAvailability:
    """A missing model the workflow's `models` list gives a URL for that this worker may download is not
    missing: the worker downloads it before the job runs."""
    fetched = {n for m in workflow.models if fetchable(m) for n in (m.name, f"{m.folder}/{m.name}")}
    missing = [m for m in found.missing_models if m not in fetched]
    if len(missing) == len(found.missing_models):
        return found
    ready = not (missing or found.missing_nodes or found.problems)
    return found.model_copy(update={"missing_models": missing, "ready": ready})


def capabilities(
    catalog: WorkerCatalog,
    object_info: Mapping[str, Any],
    labels: frozenset[str],
    fetchable: Fetchable = lambda _model: False,
) -> tuple[Capabilities, dict[str, WorkflowAvailability]]:
    """This worker's classes over every kept version, and the active version's availability per workflow
    (what the heartbeat shows as before)."""
    runs, cannot = {RAW_GRAPH_CLASS}, {}
    active = catalog.active()
    checked: dict[str, WorkflowAvailability] = {}
    try:
        kept = catalog.kept()
    except ComfyJobsError as exc:  # (Redis away: the active version is checked, the others next time)
        log.warning("kept catalog versions not read: %s", exc)
        kept = []
    versions = [active.version, *(v for v in kept if v != active.version)]
    for version in versions:
        try:
            registry = catalog.registry(version)
        except ComfyJobsError as exc:  # pruned meanwhile, or unreadable here
            log.warning("catalog %s not checked: %s", short(version), exc)
            continue
        for workflow_id, workflow in registry.workflows.items():
            found = _without_fetchable(check_workflow(workflow, object_info), workflow, fetchable)
            reason = why_not(found, workflow, labels)
            if version == active.version:  # (only labels lacking: said as a problem)
                checked[workflow_id] = found if not found.ready or reason is None else _lacking(reason)
            names = [job_class(workflow_id, version)]
            if version == active.version:
                names.append(job_class(workflow_id, None))  # (jobs accepted before catalogs)
            for name in names:
                if reason is None:
                    runs.add(name)
                else:
                    cannot[name] = reason
    return Capabilities(frozenset(runs), cannot), checked


def _lacking(reason: str) -> WorkflowAvailability:
    """A workflow ComfyUI has all it needs for, on a worker without the labels it requires."""
    return WorkflowAvailability(ready=False, problems=[reason])
