"""The Comfy API v2's shapes (the vendored openapi.yaml's schemas), made from comfyjobs's own records.

A v2 job is a comfyjobs job (see jobs.record): its status, progress, outputs and error are the record's,
named as the spec names them. A v2 asset is a comfyjobs asset (id = sha256 of the bytes) with its blake3.
A job's outputs are assets too, each with the id ``out_<task id>_<n>`` (see ``output_id``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from comfyjobs.jobs.record import JobRecord, JobStatus, StoredOutput
from comfyjobs.jobs.store import QueuePlace
from comfyjobs.storage.assets import Asset

V2Status = Literal["queued", "running", "succeeded", "canceling", "canceled", "failed", "expired"]
TERMINAL_V2: frozenset[str] = frozenset({"succeeded", "canceled", "failed", "expired"})

# The v2 spec's spelling of a record's error type, where it has its own.
ERROR_CODES = {"cancelled": "canceled"}

STATUS: dict[JobStatus, V2Status] = {
    JobStatus.PENDING: "queued",
    JobStatus.STARTED: "running",
    JobStatus.PROGRESS: "running",
    JobStatus.SUCCESS: "succeeded",
    JobStatus.FAILURE: "failed",
    JobStatus.CANCELLED: "canceled",
}

OUTPUT_TYPES = {
    "image": "image",
    "animated_image": "image",
    "video": "video",
    "audio": "audio",
    "text": "text",
}
_OUTPUT_ID = re.compile(r"^out_([0-9A-Za-z_-]+)_(\d{1,6})$")


def output_id(task_id: str, index: int) -> str:
    return f"out_{task_id}_{index}"


def parse_output_id(value: str) -> tuple[str, int] | None:
    """(task id, index) of an output's asset id; None for any other id."""
    found = _OUTPUT_ID.match(value)
    return (found.group(1), int(found.group(2))) if found else None


def blake3_ref(hex_digest: str | None) -> str | None:
    return f"blake3:{hex_digest}" if hex_digest else None


class Progress(BaseModel):
    value: float = Field(ge=0, le=1)
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    current_node_class: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None


class Output(BaseModel):
    node_id: str
    name: str
    type: str
    content_type: str
    size_bytes: int
    id: str
    hash: str | None
    url: str
    url_expires_at: datetime
    job_id: str | None = None


class JobError(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None


class JobUrls(BaseModel):
    self_: str = Field(serialization_alias="self")
    events: str
    cancel: str


class Job(BaseModel):
    id: str
    status: V2Status
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    queue_position: int | None = Field(description="jobs ahead of this one (0: the next to start)")
    progress: Progress | None
    outputs: list[Output]
    error: JobError | None
    metrics: dict[str, int | None]
    urls: JobUrls


class Asset2(BaseModel):
    id: str
    hash: str | None
    size_bytes: int
    content_type: str
    file_path: str | None = None
    created_new: bool | None = None  # left out when unknown (the spec has it optional, not nullable)
    created_at: datetime
    url: str
    url_expires_at: datetime
    expires_at: datetime | None = None
    job_id: str | None = None


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return None if start is None or end is None else max(0, int((end - start).total_seconds() * 1000))


def progress_of(record: JobRecord) -> Progress | None:
    if record.status == JobStatus.PENDING:
        return None
    p = record.progress
    total = len(record.graph) if record.graph is not None else 0
    done = record.status == JobStatus.SUCCESS
    steps = p.max or None
    return Progress(
        value=1.0 if done else min(1.0, max(0.0, p.percent / 100.0)),
        nodes_done=total if done else 0,
        nodes_total=total,
        current_node=p.node,
        current_node_class=p.node_type,
        step=p.value if steps else None,
        steps=steps,
        message=f"{p.node_type} {p.value}/{p.max}" if steps and p.node_type else None,
    )


def status_of(record: JobRecord, *, stopping: bool = False) -> V2Status:
    """``stopping``: cancelled while its worker still holds it (interrupting the prompt): canceling."""
    if record.status == JobStatus.CANCELLED and stopping:
        return "canceling"
    return STATUS[record.status]


def job_view(
    record: JobRecord,
    place: QueuePlace | None,
    outputs: list[Output],
    job_ttl_s: int,
    *,
    stopping: bool = False,
) -> Job:
    base = f"/api/v2/jobs/{record.task_id}"
    error = record.error
    position = place.position - 1 if place is not None and place.position is not None else None
    return Job(
        id=record.task_id,
        status=status_of(record, stopping=stopping),
        created_at=record.created_at,
        started_at=record.started_at,
        completed_at=record.finished_at if record.is_terminal else None,
        expires_at=record.created_at + timedelta(seconds=job_ttl_s),
        queue_position=position if record.status == JobStatus.PENDING else None,
        progress=progress_of(record),
        outputs=outputs,
        error=None
        if error is None
        else JobError(
            code=ERROR_CODES.get(error.type, error.type),
            message=error.message,
            node_id=error.node_id,
            class_type=error.node_type,
        ),
        metrics={
            "queue_ms": _ms(record.created_at, record.started_at),
            "execution_ms": _ms(record.started_at, record.finished_at),
        },
        urls=JobUrls(self_=base, events=f"{base}/events", cancel=f"{base}/cancel"),
    )


def output_view(task_id: str, index: int, output: StoredOutput, url: str, expires_at: datetime) -> Output:
    return Output(
        node_id=output.node_id,
        name=output.filename,
        type=OUTPUT_TYPES.get(output.kind, "file"),
        content_type=output.content_type,
        size_bytes=output.size_bytes,
        id=output_id(task_id, index),
        hash=None,  # the spec allows null ("computed lazily"); outputs are not hashed
        url=url,
        url_expires_at=expires_at,
        job_id=task_id,
    )


def asset_view(
    asset: Asset, url: str, url_expires_at: datetime, *, created_new: bool | None = None
) -> Asset2:
    return Asset2(
        id=asset.id,
        hash=blake3_ref(asset.blake3),
        size_bytes=asset.size_bytes,
        content_type=asset.content_type,
        file_path=asset.filename,
        created_new=created_new,
        created_at=asset.created_at,
        url=url,
        url_expires_at=url_expires_at,
        expires_at=asset.expires_at,
    )


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready, with the spec's field names (``self`` in urls)."""
    data = model.model_dump(mode="json", by_alias=True)
    if isinstance(model, Asset2) and data["created_new"] is None:
        del data["created_new"]
    return data
