"""A thousand events streams on one API process share one Redis subscriber: they hold no connection each,
/health answers meanwhile, and one change of the task reaches every stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from comfyjobs.api.app import create_app
from comfyjobs.jobs.record import JobStatus
from comfyjobs.settings import Settings
from tests.api.conftest import LiveApi
from tests.support import served, worker_store

STREAMS = 1000
BATCH = 100


def api_connections(redis_client: redis.Redis) -> int:
    """Redis connections of this test process's API (ours are named apart: see below)."""
    return sum(1 for c in redis_client.client_list() if c.get("name") != "test-observer")


async def open_stream(
    host: str, port: int, task_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> None:
    seen = b""
    while marker not in seen:
        chunk = await reader.read(65536)
        assert chunk, f"the stream closed before {marker!r}; it sent {seen[-600:]!r}"
        seen += chunk


@pytest.fixture
def quiet_api(settings: Settings, redis_client: redis.Redis) -> Iterator[LiveApi]:
    """The live API with SSE_HEARTBEAT_S of 5 s: each heartbeat of a quiet stream reads its task's
    streams once, and a thousand streams at the other tests' 0.2 s (5,000 reads a second, client and
    server in this one process on 2 cores) starved the pool (streams ended "No connection available")."""
    settings = settings.model_copy(update={"sse_heartbeat_s": 5.0})
    with served(create_app(settings)) as url:
        yield LiveApi(url=url, settings=settings, store=worker_store(redis_client, settings))


def test_a_thousand_streams_share_one_subscriber(quiet_api: LiveApi, redis_client: redis.Redis) -> None:
    live_api = quiet_api
    redis_client.client_setname("test-observer")

    with httpx.Client(base_url=live_api.url, timeout=30) as api:
        task_id = api.post("/generate", json={"workflow_id": "tiny", "params": {}}).json()["task_id"]
    split = urlsplit(live_api.url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    before = api_connections(redis_client)

    async def run() -> tuple[int, int]:
        streams = []
        for _ in range(0, STREAMS, BATCH):  # clients arrive in waves, not all in one instant
            wave = await asyncio.gather(*(open_stream(host, port, task_id) for _ in range(BATCH)))
            await asyncio.gather(*(read_until(r, b"event: queued") for r, _ in wave))
            streams += wave
        during = api_connections(redis_client)
        async with httpx.AsyncClient(base_url=live_api.url, timeout=30) as client:
            health = (await client.get("/health")).status_code
        # One change, seen by every stream through the one subscriber.
        live_api.store.update(task_id, status=JobStatus.STARTED)
        await asyncio.gather(*(read_until(r, b"event: started") for r, _ in streams))
        for _, writer in streams:
            writer.close()
        return during, health

    during, health = asyncio.run(run())
    print(f"{STREAMS} streams: API Redis connections {before} before, {during} while all were open")
    assert health == 200
    # Every stream is waiting, yet the API holds a pool's worth of connections at most, not one each.
    assert during - before <= live_api.settings.api_redis_connections + 1, (before, during)
