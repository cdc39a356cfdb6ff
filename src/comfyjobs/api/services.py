"""What the routes need, built once per app in the lifespan and reached through ``services()``."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request

from comfyjobs.api.availability import FleetView
from comfyjobs.api.catalog import CatalogView
from comfyjobs.api.model_catalog import ModelCatalog
from comfyjobs.api.quotas import RateLimiter
from comfyjobs.api.task_feed import TaskFeed
from comfyjobs.api.v2.graphs import GraphIntake
from comfyjobs.api.views import Links
from comfyjobs.errors import TaskNotFoundError
from comfyjobs.jobs.record import JobRecord
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.media.resolve import MediaResolver
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.settings import Settings
from comfyjobs.storage.assets import AssetRecords
from comfyjobs.storage.objects import ObjectStore
from comfyjobs.tenancy import Principal


@dataclass(frozen=True)
class Services:
    settings: Settings
    catalog: CatalogView  # the active version's registry (and any version's, for jobs built from it)
    redis: aioredis.Redis
    fleet: FleetView
    store: AsyncJobStore
    feed: TaskFeed
    objects: ObjectStore
    links: Links
    assets: AssetRecords
    media: MediaResolver
    models: ModelCatalog
    rate: RateLimiter
    graphs: GraphIntake  # raw graphs (the v2 API): policy, assets, the workers' object_info
    webhook_policy: UrlPolicy  # where webhook targets may be (WEBHOOK_URL_ALLOWLIST)
    model_urls: ModelUrls  # which models a client may give as URLs (MODEL_URL_ALLOWLIST)


async def owned_task(svc: Services, task_id: str, caller: Principal) -> JobRecord:
    """The caller's task (a v2 job too); another tenant's answers exactly as an unknown one."""
    record = await svc.store.get(task_id)
    if record is None or not caller.sees(record.tenant):
        raise TaskNotFoundError(f"no task {task_id[:80]!r} (unknown, or expired after JOB_TTL_S)")
    return record


async def services(request: Request) -> Services:
    """Async, so FastAPI calls it on the loop rather than in a thread for every request."""
    svc: Services = request.app.state.services
    return svc
