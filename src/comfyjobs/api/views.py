"""Response shapes. Output URLs are made here, from PUBLIC_URL, at read time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from comfyjobs.jobs.record import JobError, JobRecord, JobStatus, Progress
from comfyjobs.jobs.store import QueuePlace


class OutputView(BaseModel):
    url: str
    filename: str
    content_type: str
    node_id: str
    size_bytes: int


class QueueView(BaseModel):
    position: int = Field(description="1 = the next job a worker takes")
    waiting: int = Field(description="jobs waiting on the queue in all")


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
    queue: QueueView | None = Field(default=None, description="while the job waits for a worker")
    last_event_id: str | None = Field(
        default=None,
        description="id of the last event this view reflects: `since` for the long poll, "
        "`Last-Event-ID` for the events stream",
    )

    @classmethod
    def from_record(
        cls,
        record: JobRecord,
        public_base_url: str,
        place: QueuePlace | None = None,
        last_event_id: str | None = None,
    ) -> TaskView:
        outputs = [
            OutputView(url=f"{public_base_url}/outputs/{record.task_id}/{o.filename}", **o.model_dump())
            for o in record.outputs
        ]
        queue = None
        if place is not None and place.position is not None and record.status == JobStatus.PENDING:
            queue = QueueView(position=place.position, waiting=place.waiting)
        return cls(
            outputs=outputs,
            queue=queue,
            last_event_id=last_event_id,
            **record.model_dump(exclude={"outputs"}),
        )


class Accepted(BaseModel):
    task_id: str
    status: JobStatus
    workflow_id: str
    params: dict[str, Any]
    status_url: str
