"""The take's cost with capabilities: 8 workers of different capability sets draining a queue of 10,000
waiting jobs, and how that cost follows the queue's depth (it must not: a take reads one head per class it
can run, never a scan of the jobs).

Starts its own redis-server, admits --jobs jobs (through the API's admission script) of 6 classes (3
workflows x 2 catalog versions) from --tenants tenants at priorities 3, 5 and 7, then lets 8 simulated
workers take in turn until the queue is empty. Worker i runs a different subset of the classes (one to
all six; every class is run by some worker). Each take is the real CLAIM script with its lease (no start:
the jobs are only taken). Prints, per band of queue depth (10,000-5,000, 5,000-1,000, under 1,000):
Redis's own time per take (INFO commandstats: EVALSHA usec_per_call) and the client's round trip p50/p99;
then the same drain with every worker running every class (the take without capabilities) beside it.

    .venv/bin/python bench/take_cost.py [--jobs 10000] [--tenants 20]

Goal (the issue's): the figures stay flat across the bands (O(log n)-ish), a take with capabilities
within a small factor of one without.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import redis
import redis.asyncio as aioredis
from harness import free_port, percentile, run

from comfyjobs.jobs.delivery import JobMessages, make_celery
from comfyjobs.jobs.queue import job_class
from comfyjobs.jobs.record import JobRecord
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.jobs.worker_store import Claimed, JobStore, Take
from comfyjobs.manifests.loader import load_registry
from comfyjobs.redis_server import RedisServer
from comfyjobs.settings import Settings

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = ("txt2img", "img2img", "video")
VERSIONS = ("1" * 64, "2" * 64)
CLASSES = [job_class(w, v) for w in WORKFLOWS for v in VERSIONS]
BANDS = ((5000, 10**9), (1000, 5000), (0, 1000))


def capability_sets() -> list[frozenset[str]]:
    """8 workers: each class run by some, no two alike (one class, pairs, a version's three, all)."""
    c = CLASSES
    return [
        frozenset(c[0:1]), frozenset(c[1:2]), frozenset(c[2:4]), frozenset(c[4:6]),
        frozenset(c[0::2]), frozenset(c[1::2]), frozenset(c[0:3]), frozenset(c),
    ]  # fmt: skip


async def admit(url: str, queue: str, messages: JobMessages, jobs: int, tenants: int) -> None:
    client = aioredis.Redis.from_url(url)
    store = AsyncJobStore(client, 3600, queue, messages)
    try:
        for i in range(jobs):
            workflow, version = WORKFLOWS[i % 3], VERSIONS[(i // 3) % 2]
            record = JobRecord(
                task_id=uuid.uuid4().hex, workflow_id=workflow, catalog_version=version,
                tenant=f"t{i % tenants}", priority=(3, 5, 7)[(i // 7) % 3],
            )  # fmt: skip
            await store.admit(record)
    finally:
        await client.aclose()


def evalsha_usec(client: redis.Redis) -> tuple[int, float]:
    stat = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stat.get("calls", 0)), float(stat.get("usec", 0))


def drain(client: redis.Redis, store: JobStore, sets: list[frozenset[str] | None], jobs: int) -> None:
    waiting = jobs
    band_of = {band: ([], [0, 0.0]) for band in BANDS}  # latencies, [calls, usec] at the band's start
    current = None
    i = 0
    while waiting > 0:
        band = next(b for b in BANDS if b[0] <= waiting < b[1])
        if band != current:
            if current is not None:
                _close(client, band_of[current])
            band_of[band][1][:] = evalsha_usec(client)
            current = band
        runs = sets[i % len(sets)]
        i += 1
        t0 = time.perf_counter()
        got = store.take(Take(f"w{i % len(sets)}", 600, runs=runs))
        band_of[band][0].append(time.perf_counter() - t0)
        if isinstance(got, Claimed):
            waiting -= 1
    if current is not None:
        _close(client, band_of[current])
    for (low, high), (lat, (calls, usec)) in band_of.items():
        ms = [s * 1000 for s in lat]
        label = f"{low:>5}-{min(high, jobs):<6}"
        print(f"  waiting {label} takes {len(ms):>6}: Redis {usec / max(calls, 1):6.1f} us/take, "
              f"round trip p50 {percentile(ms, 0.5):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms")  # fmt: skip


def _close(client: redis.Redis, entry: tuple[list[float], list[float]]) -> None:
    calls, usec = evalsha_usec(client)
    entry[1][:] = [calls - entry[1][0], usec - entry[1][1]]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    registry = load_registry(REPO / "manifests", REPO / "workflows")
    with tempfile.TemporaryDirectory(prefix="comfyjobs-bench-") as tmp:
        server = RedisServer(port=free_port(), data_dir=Path(tmp) / "redis")
        server.start()
        server.wait_ready()
        try:
            client = redis.Redis.from_url(server.url)
            for label, sets in (
                ("8 workers, different capabilities", capability_sets()),
                ("every worker runs all", [None] * 8),
            ):
                queue = f"bench-take-{uuid.uuid4().hex[:6]}"
                settings = Settings.load(redis_url=server.url, queue_name=queue)
                messages = JobMessages(make_celery(settings, registry), queue)
                asyncio.run(admit(server.url, queue, messages, args.jobs, args.tenants))
                print(
                    f"{label}: {args.jobs} jobs, {len(CLASSES)} classes, {args.tenants} tenants, 3 priorities"
                )
                drain(client, JobStore(client, 3600, queue, messages), sets, args.jobs)
            client.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    run(main)
