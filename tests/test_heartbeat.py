"""Worker heartbeats: one hash, read whole; a worker that stopped beating drops out by itself."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.heartbeat import Heartbeat, WorkerBeat, live_workers
from comfyjobs.jobs.record import utc_now


def beat(worker_id: str, age_s: float = 0) -> WorkerBeat:
    seen = utc_now() - timedelta(seconds=age_s)
    return WorkerBeat(
        worker_id=worker_id, device="cpu", pid=1, comfyui_ready=True, comfyui_pid=None, comfyui_restarts=0,
        started_at=seen, seen_at=seen,
    )  # fmt: skip


def test_beats_count_for_three_intervals(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.delete(keys.WORKERS)
    live = Heartbeat(redis_client, interval_s=5, make_beat=lambda: beat("w-live"))
    gone = Heartbeat(redis_client, interval_s=5, make_beat=lambda: beat("w-gone", age_s=16))  # > 3 x 5 s
    live.beat()
    gone.beat()

    async def read() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return [b.worker_id for b in await live_workers(client)]
        finally:
            await client.aclose()

    assert asyncio.run(read()) == ["w-live"]
    assert redis_client.hkeys(keys.WORKERS) == [b"w-live"]  # the stale beat was cleared on the way
    live.stop()  # a worker that stops cleanly is gone at once
    assert asyncio.run(read()) == []
