"""The job record: what a task is, where it stands and what it produced.

Stored as a Redis hash (one field per attribute, each JSON-encoded) so the API and the worker can update
parts of it without read-modify-write races. Output URLs are not stored: they are built from PUBLIC_URL
when the record is read, so a changed public address never leaves stale links.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from comfyjobs.errors import ComfyError, ComfyJobsError


class JobStatus(StrEnum):
    PENDING = "PENDING"  # accepted and queued
    STARTED = "STARTED"  # a worker took it
    PROGRESS = "PROGRESS"  # ComfyUI is executing it
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"  # by DELETE /tasks/{id}; a running prompt is interrupted in ComfyUI


TERMINAL_STATUSES = frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED})


def utc_now() -> datetime:
    return datetime.now(UTC)


class Progress(BaseModel):
    value: int = 0
    max: int = 0
    percent: float = 0.0
    node: str | None = None
    node_type: str | None = None
    # "downloading": the worker fetches the job's models first (bytes_done of bytes_total, None: unknown)
    stage: Literal["downloading"] | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None


OutputKind = Literal["image", "animated_image", "video", "audio", "text", "file"]


class StoredOutput(BaseModel):
    filename: str
    content_type: str
    node_id: str
    size_bytes: int
    kind: OutputKind = "file"


class InputRef(BaseModel):
    """A media parameter's file, as the worker hands it to ComfyUI: the asset's stored object."""

    asset_id: str
    sha256: str
    key: str  # the stored object
    content_type: str
    extension: str

    @property
    def upload_name(self) -> str:
        """Content-addressed: the same bytes get the same name in every ComfyUI."""
        return f"{self.sha256}{self.extension}"


class JobError(BaseModel):
    type: str
    message: str
    node_id: str | None = None
    node_type: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobError:
        if isinstance(exc, ComfyError):
            return cls(type=exc.code, message=exc.message, node_id=exc.node_id, node_type=exc.node_type)
        if isinstance(exc, ComfyJobsError):
            return cls(type=exc.code, message=exc.message)
        return cls(type="internal_error", message=f"{type(exc).__name__}: {exc}")


RAW_GRAPH = "(graph)"
"""The workflow id of a job whose API-format graph was given as it is (the v2 API), not built from a
manifest."""


class WebhookState(BaseModel):
    """How the task's webhook deliveries went, all its events together."""

    attempts: int = 0  # POSTs made so far
    last_status: int | None = None  # the receiver's HTTP status to the last one; None: no answer
    delivered_at: datetime | None = None  # the last delivery the receiver took (2xx)


class JobRecord(BaseModel):
    task_id: str
    workflow_id: str  # a manifest's workflow, or RAW_GRAPH
    tenant: str | None = None  # who submitted it (see tenancy); None: before tenancy
    status: JobStatus = JobStatus.PENDING
    params: dict[str, Any] = Field(default_factory=dict)
    progress: Progress = Field(default_factory=Progress)
    outputs: list[StoredOutput] = Field(default_factory=list)
    inputs: dict[str, InputRef] = Field(default_factory=dict)  # media parameter (or "node.input") → its file
    graph: dict[str, Any] | None = None  # RAW_GRAPH jobs: the API-format graph, run as it is
    # The catalog version (comfyjobs.catalog) it was validated against; its worker builds it from that
    # version. None: a RAW_GRAPH job, or accepted before catalogs (built from the active version).
    catalog_version: str | None = None
    priority: int = 5  # 0-9, higher first (jobs.queue)
    queue_seq: int | None = None  # its place within its lane, taken at admission (jobs.queue)
    models: list[str] = Field(default_factory=list)  # model files its graph loads (model affinity)
    skips: int = 0  # times a worker took another job ahead of it for model affinity (jobs.queue)
    webhook_url: str | None = None  # gets task.started / succeeded / failed / cancelled (webhooks)
    webhook: WebhookState | None = None
    outputs_expire_at: datetime | None = None  # OUTPUT_TTL_S after the end, or when deleted on request
    error: JobError | None = None
    worker: str | None = None
    attempts: int = 0
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Record attributes → Redis hash fields. Values may be models, enums, datetimes or plain JSON."""
    out = {}
    for name, value in fields.items():
        if name not in JobRecord.model_fields:
            raise KeyError(f"JobRecord has no field {name!r}")
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif isinstance(value, list):
            value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        elif isinstance(value, dict):
            value = {
                k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in value.items()
            }
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = json.dumps(value)
    return out


def encode_record(record: JobRecord) -> dict[str, str]:
    return {name: json.dumps(value) for name, value in record.model_dump(mode="json").items()}


def decode_record(raw: Mapping[bytes | str, bytes | str] | Mapping[str, str]) -> JobRecord:
    data = {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
    return JobRecord.model_validate(data)
