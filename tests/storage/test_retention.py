"""Objects are deleted once their time is up, and only then."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.storage.local import LocalObjectStore
from comfyjobs.storage.retention import RetentionSweeper
from comfyjobs.storage.signing import UrlSigner


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path, UrlSigner(b"k" * 32), "http://api")


def test_due_objects_are_deleted_once(
    store: LocalObjectStore, redis_url: str, redis_client: redis.Redis
) -> None:
    asyncio.run(_sweeps(store, redis_url, redis_client))


async def _sweeps(store: LocalObjectStore, redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.delete(keys.OBJECT_EXPIRY)
    store.put_bytes("outputs/old/a.png", b"a", "image/png")
    store.put_bytes("outputs/old/b.png", b"b", "image/png")
    store.put_bytes("outputs/new/a.png", b"c", "image/png")
    redis_client.zadd(
        keys.OBJECT_EXPIRY, {"outputs/old/": time.time() + 60, "outputs/new/": time.time() + 3600}
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        sweeper = RetentionSweeper(client, store, interval_s=60)
        assert await sweeper.sweep() == []  # nothing due yet
        assert await sweeper.sweep(now=time.time() + 120) == ["outputs/old/"]
        assert not store.exists("outputs/old/a.png") and not store.exists("outputs/old/b.png")
        assert store.exists("outputs/new/a.png")
        assert await sweeper.sweep(now=time.time() + 120) == []  # claimed once
        assert await sweeper.sweep(now=time.time() + 7200) == ["outputs/new/"]
        assert redis_client.zcard(keys.OBJECT_EXPIRY) == 0
    finally:
        await client.aclose()
