"""Response shapes. Output and asset URLs are made here at read time: signed, expiring links (presigned
with S3), fresh on every read, never stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from comfyjobs.api.eta import Eta
from comfyjobs.jobs.record import JobError, JobRecord, JobStatus, OutputKind, Progress, WebhookState, utc_now
from comfyjobs.jobs.store import QueuePlace
from comfyjobs.storage.assets import Asset
from comfyjobs.storage.objects import ObjectStore, output_key


class Links:
    """Makes the links of one read: every URL valid for URL_TTL_S from now."""

    def __init__(self, store: ObjectStore, ttl_s: int) -> None:
        self._store = store
        self._ttl_s = ttl_s

    def output(self, task_id: str, filename: str, content_type: str) -> tuple[str, datetime]:
        link = self._store.link(
            output_key(task_id, filename), content_type=content_type, filename=filename, ttl_s=self._ttl_s
        )
        return link.url, link.expires_at

    def asset(self, asset: Asset) -> tuple[str, datetime]:
        name = asset.filename or f"{asset.id[:16]}{asset.extension}"
        link = self._store.link(asset.key, content_type=asset.content_type, filename=name, ttl_s=self._ttl_s)
        return link.url, link.expires_at


class OutputView(BaseModel):
    url: str
    url_expires_at: datetime
    filename: str
    content_type: str
    kind: OutputKind
    node_id: str
    size_bytes: int


class AssetView(BaseModel):
    id: str = Field(description="Use it as the value of a media parameter (image, mask, video, ...).")
    sha256: str
    tenant: str = Field(description="whose asset it is (the API key's tenant)")
    kind: str = Field(description="image, video, audio or file, as the content decoded")
    content_type: str
    size_bytes: int
    width: int | None
    height: int | None
    filename: str | None
    url: str
    url_expires_at: datetime
    created_at: datetime
    expires_at: datetime = Field(description="deleted after this unless uploaded again or used by a job")

    @classmethod
    def from_asset(cls, asset: Asset, links: Links) -> AssetView:
        url, url_expires_at = links.asset(asset)
        return cls(url=url, url_expires_at=url_expires_at, **asset.model_dump(exclude={"extension"}))


class QueueView(BaseModel):
    position: int = Field(
        description="1 = the next job a worker takes (counting higher priorities, and tenants' turns)"
    )
    waiting: int = Field(description="jobs waiting on the queue in all")
    blocked: str | None = Field(
        default=None,
        description="why no live worker can run it (it waits until one can), e.g. "
        '"no worker can run txt2img@3f2a9c1e0b7d: missing model checkpoints/sdxl.safetensors"',
    )


class TaskView(BaseModel):
    task_id: str
    workflow_id: str
    catalog_version: str | None = Field(
        default=None, description="the workflow catalog version it was validated against and is run from"
    )
    tenant: str | None = Field(default=None, description="whose task it is (the API key's tenant)")
    status: JobStatus
    priority: int = Field(default=5, description="0-9, higher first")
    progress: Progress
    params: dict[str, Any]
    outputs: list[OutputView]
    outputs_expire_at: datetime | None = Field(
        default=None, description="outputs are deleted then (OUTPUT_TTL_S), or were deleted on request"
    )
    outputs_deleted: bool = False
    error: JobError | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue: QueueView | None = Field(default=None, description="while the job waits for a worker")
    webhook_url: str | None = None
    webhook: WebhookState | None = Field(
        default=None, description="how its webhook deliveries went (with a webhook_url): all events together"
    )
    estimated_start_at: datetime | None = Field(
        default=None, description="while it waits: when a worker should take it (recent run times)"
    )
    estimated_finish_at: datetime | None = Field(
        default=None, description="while it waits or runs: when it should be done (its sampler's pace)"
    )
    last_event_id: str | None = Field(
        default=None,
        description="id of the last event this view reflects: `since` for the long poll, "
        "`Last-Event-ID` for the events stream",
    )

    @classmethod
    def from_record(
        cls,
        record: JobRecord,
        links: Links,
        place: QueuePlace | None = None,
        last_event_id: str | None = None,
        eta: Eta | None = None,
        blocked: str | None = None,
    ) -> TaskView:
        outputs = []
        expired = record.outputs_expire_at is not None and record.outputs_expire_at <= utc_now()
        if not expired:
            for o in record.outputs:
                url, url_expires_at = links.output(record.task_id, o.filename, o.content_type)
                outputs.append(OutputView(url=url, url_expires_at=url_expires_at, **o.model_dump()))
        queue = None
        if place is not None and place.position is not None and record.status == JobStatus.PENDING:
            queue = QueueView(position=place.position, waiting=place.waiting, blocked=blocked)
        return cls(
            outputs=outputs,
            outputs_deleted=expired,
            queue=queue,
            last_event_id=last_event_id,
            estimated_start_at=eta.start_at if eta and record.status == JobStatus.PENDING else None,
            estimated_finish_at=eta.finish_at if eta else None,
            **record.model_dump(exclude={"outputs", "inputs", "graph", "queue_seq"}),
        )


class Accepted(BaseModel):
    task_id: str
    status: JobStatus
    workflow_id: str
    catalog_version: str | None = None
    params: dict[str, Any]
    priority: int
    status_url: str
