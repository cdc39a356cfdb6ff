"""Response shapes. Output URLs are made here, from PUBLIC_URL, at read time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from comfyjobs.jobs.record import JobError, JobRecord, JobStatus, Progress


class OutputView(BaseModel):
    url: str
    filename: str
    content_type: str
    node_id: str
    size_bytes: int


class TaskView(BaseModel):
    task_id: str
    workflow_id: str
    status: JobStatus
    progress: Progress
    params: dict[str, Any]
    outputs: list[OutputView]
    error: JobError | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, record: JobRecord, public_base_url: str) -> TaskView:
        outputs = [
            OutputView(url=f"{public_base_url}/outputs/{record.task_id}/{o.filename}", **o.model_dump())
            for o in record.outputs
        ]
        return cls(
            outputs=outputs,
            **record.model_dump(exclude={"outputs"}),
        )


class Accepted(BaseModel):
    task_id: str
    status: JobStatus
    workflow_id: str
    params: dict[str, Any]
    status_url: str
