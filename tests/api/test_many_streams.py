"""A thousand events streams on one API process share one Redis subscriber: they hold no connection each,
/health answers meanwhile, their heartbeats cost no Redis read, and one change of the task reaches every
stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from comfyjobs.jobs.record import JobStatus
from tests.api.conftest import LiveApi

STREAMS = 1000
BATCH = 100


def api_connections(redis_client: redis.Redis) -> int:
    """Redis connections of this test process's API (ours are named apart: see below)."""
    return sum(1 for c in redis_client.client_list() if c.get("name") != "test-observer")


@dataclass(frozen=True)
class Route:
    path: str  # with {id}
    connected: bytes  # what a stream sends first
    heartbeat: bytes
    started: bytes  # what it sends once its job starts


ROUTES = {
    "v1": Route("/tasks/{id}/events", b"event: queued", b": heartbeat", b"event: started"),
    "v2": Route("/api/v2/jobs/{id}/events", b"event: status", b": keepalive", b'"status":"running"'),
}


async def open_stream(host: str, port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> None:
    seen = b""
    while marker not in seen:
        chunk = await reader.read(65536)
        assert chunk, f"the stream closed before {marker!r}; it sent {seen[-600:]!r}"
        seen += chunk


class Listener:
    """Reads one stream all along (nothing piles up unread), counting its heartbeats."""

    def __init__(self, reader: asyncio.StreamReader, heartbeat: bytes) -> None:
        self._heartbeat = heartbeat
        self.seen = b""
        self.heartbeats = 0
        self._read = asyncio.Event()  # set at each chunk (and at the end)
        self.task = asyncio.create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(65536):
                self.seen += chunk
                self.heartbeats = self.seen.count(self._heartbeat)
                self._read.set()
        finally:
            self._read.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            assert not self.task.done(), f"the stream closed; it sent {self.seen[-600:]!r}"
            self._read.clear()
            await self._read.wait()


def xreads(redis_client: redis.Redis) -> int:
    stats = redis_client.info("commandstats").get("cmdstat_xread", {})
    return int(stats.get("calls", 0))


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
def test_a_thousand_streams_share_one_subscriber(
    live_api: LiveApi, redis_client: redis.Redis, route: Route
) -> None:
    redis_client.client_setname("test-observer")

    with httpx.Client(base_url=live_api.url, timeout=30) as api:
        task_id = api.post("/generate", json={"workflow_id": "tiny", "params": {}}).json()["task_id"]
    split = urlsplit(live_api.url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    before = api_connections(redis_client)

    async def run() -> tuple[int, int, int]:
        streams = []
        for _ in range(0, STREAMS, BATCH):  # clients arrive in waves, not all in one instant
            path = route.path.format(id=task_id)
            wave = await asyncio.gather(*(open_stream(host, port, path) for _ in range(BATCH)))
            await asyncio.gather(*(read_until(r, route.connected) for r, _ in wave))
            streams += wave
        during = api_connections(redis_client)
        async with httpx.AsyncClient(base_url=live_api.url, timeout=30) as client:
            health = (await client.get("/health")).status_code
        # Quiet streams cost Redis nothing: two heartbeats on every stream, not one read of its task.
        listeners = [Listener(r, route.heartbeat) for r, _ in streams]
        # (What piled up unread meanwhile is read first: the count starts from a heartbeat seen.)
        await asyncio.gather(*(x.until(lambda x=x: x.heartbeats >= 1) for x in listeners))
        counts, reads_before = [x.heartbeats for x in listeners], xreads(redis_client)
        await asyncio.gather(
            *(x.until(lambda x=x, n=n: x.heartbeats >= n + 2) for x, n in zip(listeners, counts, strict=True))
        )
        quiet_reads = xreads(redis_client) - reads_before
        # One change, seen by every stream through the one subscriber.
        live_api.store.update(task_id, status=JobStatus.STARTED)
        await asyncio.gather(*(x.until(lambda x=x: route.started in x.seen) for x in listeners))
        for listener, (_, writer) in zip(listeners, streams, strict=True):
            writer.close()
            listener.task.cancel()
        return during, health, quiet_reads

    during, health, quiet_reads = asyncio.run(run())
    print(
        f"{STREAMS} streams: API Redis connections {before} before, {during} while all were open; "
        f"{quiet_reads} XREADs over two heartbeats each"
    )
    assert health == 200
    # Every stream is waiting, yet the API holds a pool's worth of connections at most, not one each.
    assert during - before <= live_api.settings.api_redis_connections + 1, (before, during)
    # (Each stream read its task's streams at each heartbeat before: 2,000 reads or more here.)
    assert quiet_reads < STREAMS // 10, quiet_reads
