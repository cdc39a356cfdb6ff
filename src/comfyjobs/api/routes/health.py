"""GET /health (the process answers) and GET /ready (it can do work: Redis up, a worker's ComfyUI ready)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from comfyjobs.api.availability import availability_of
from comfyjobs.api.services import Services, services
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.heartbeat import live_workers, of_queue

router = APIRouter(tags=["health"])

REDIS_CHECK_TIMEOUT_S = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready; `reasons` says why."}})
async def ready(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    reasons: list[str] = []
    workers: list[dict[str, Any]] = []
    runnable: dict[str, int] = {}
    waiting: int | None = None
    try:
        async with asyncio.timeout(REDIS_CHECK_TIMEOUT_S):
            await svc.redis.ping()
            beats = await live_workers(svc.redis)
        workers = [b.model_dump(mode="json") for b in beats]
        # Per workflow of the active catalog version: the live workers that can run it.
        ours = of_queue(beats, svc.settings.queue_name)
        runnable = {wid: found.workers_ready for wid, found in availability_of(ours).items()}
        if not beats:
            reasons.append("no worker is running")
        elif not any(b.comfyui_ready for b in beats):
            reasons.append(f"no worker's ComfyUI is ready ({len(beats)} worker(s) starting or restarting)")
        elif not any(b.comfyui_ready and b.state == "ready" for b in beats):
            warming = sum(b.state == "warming" for b in beats)
            reasons.append(f"no worker is ready: {warming} warming up (WARMUP_WORKFLOW)")
        waiting = await svc.store.waiting()
        limit = svc.settings.max_queue_depth
        if limit and waiting >= limit:
            reasons.append(f"saturated: {waiting} jobs waiting (MAX_QUEUE_DEPTH={limit})")
    except (redis.RedisError, TimeoutError, QueueUnavailableError) as exc:
        reasons.append(f"Redis is unreachable: {exc or 'timed out'}")
    body = {
        "ready": not reasons,
        "reasons": reasons,
        "workers": workers,
        "workflows": runnable,
        "waiting": waiting,
    }
    return JSONResponse(body, status_code=200 if not reasons else 503)
