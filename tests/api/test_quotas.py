"""Per-tenant quotas: waiting jobs (TENANT_MAX_QUEUED) and a request rate (TENANT_RATE_PER_S), both kept
in Redis so every API process shares them."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from comfyjobs import keys
from comfyjobs.api.app import create_app
from comfyjobs.api.quotas import RateLimiter
from comfyjobs.errors import RateLimitedError
from comfyjobs.jobs.record import JobStatus
from comfyjobs.settings import Settings
from tests.support import worker_store

ALICE = {"X-API-Key": "k-alice"}
BOB = {"X-API-Key": "k-bob"}
TINY = {"workflow_id": "tiny", "params": {}}


def tenanted(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"api_keys": SecretStr("alice:k-alice,bob:k-bob"), **update})


def test_waiting_jobs_are_capped_per_tenant(settings: Settings, redis_client: redis.Redis) -> None:
    with TestClient(create_app(tenanted(settings, tenant_max_queued=2))) as api:
        first = api.post("/generate", json=TINY, headers=ALICE).json()["task_id"]
        assert api.post("/generate", json=TINY, headers=ALICE).status_code == 202
        refused = api.post("/generate", json=TINY, headers=ALICE)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "tenant_queue_full"
        assert "TENANT_MAX_QUEUED=2" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) > 0
        assert api.post("/generate", json=TINY, headers=BOB).status_code == 202  # bob has his own room

        # A job a worker takes leaves the tenant's count, and a cancelled one too.
        store = worker_store(redis_client, settings)
        assert store.update(first, status=JobStatus.STARTED)
        assert api.post("/generate", json=TINY, headers=ALICE).status_code == 202
        assert api.post("/generate", json=TINY, headers=ALICE).status_code == 429
        assert store.update(first, status=JobStatus.PENDING)  # taken back by the reconciler: counts again
        waiting = redis_client.zlexcount(
            keys.queue_waiting_by_tenant(settings.queue_name), '["alice"|', '["alice"|\xff'
        )
        assert waiting == 3


def test_requests_are_rate_limited_per_tenant(settings: Settings) -> None:
    with TestClient(create_app(tenanted(settings, tenant_rate_per_s=0.01, tenant_rate_burst=3))) as api:
        answers = [api.get("/workflows", headers=ALICE).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = api.get("/loras", headers=ALICE)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert api.get("/workflows", headers=BOB).status_code == 200  # another tenant's bucket
        assert api.get("/health").status_code == 200  # open routes take no token


def test_the_bucket_is_shared_and_expires(redis_url: str) -> None:
    async def run() -> None:
        one, two = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
        try:
            await one.delete(keys.rate_bucket("t-refill"))
            a, b = RateLimiter(one, 0.5, 2), RateLimiter(two, 0.5, 2)  # two API processes
            await a.take("t-refill")
            await b.take("t-refill")
            with pytest.raises(RateLimitedError) as caught:
                await a.take("t-refill")
            assert 0 < caught.value.retry_after_s <= 2.0  # one token comes back every 2 s
            ttl_ms = await one.pttl(keys.rate_bucket("t-refill"))
            assert 0 < ttl_ms <= 5000  # gone once it would be full again (2 tokens: 4 s, + 1 s)
        finally:
            await one.aclose()
            await two.aclose()

    asyncio.run(run())
