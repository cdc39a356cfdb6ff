"""What the routes need, built once per app in the lifespan and reached through ``services()``."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Request

from comfyjobs.api.task_feed import TaskFeed
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.manifests.registry import Registry
from comfyjobs.settings import Settings
from comfyjobs.storage.models import ModelCatalog
from comfyjobs.storage.outputs import OutputStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    registry: Registry
    redis: aioredis.Redis
    store: AsyncJobStore
    feed: TaskFeed
    celery: Celery
    outputs: OutputStore
    models: ModelCatalog


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
