"""The API's catalog switch under load: requests in flight while versions are activated, and how long each
API process takes to serve a newly activated version.

Starts its own redis-server and `comfyjobs api` (--api-workers processes; no worker, MAX_QUEUE_DEPTH=0),
publishes two catalog versions (the shipped folders, and a copy where tiny's `width` has max 100), then
runs --clients concurrent clients for the whole run: half POST /generate (tiny, width 150: valid in the
first version, over the second's max), half GET /workflows. Meanwhile it activates the two versions in
turn, --switches times, --interval-s apart. Prints, one line per figure:

  - requests answered, and those that failed: a transport error, a 5xx, or any answer other than 202
    (first version) or 422 (second) for a POST and 200 for a GET; the goal is 0;
  - accepted jobs whose record names another version than the one that accepted it (the goal is 0:
    each job records the version it was validated against, and width 150 is only valid in the first);
  - the switch: from `activate` to the first GET /workflows answered with the new version, p50/max,
    seen from a client asking in a loop (with N API processes: whichever answers; each switches on its
    own announcement);
  - request latency p50/p99 over the run.

    .venv/bin/python bench/catalog_switch.py [--clients 16] [--switches 20] [--interval-s 0.5]
                                             [--api-workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis
import yaml
from harness import free_port, percentile, run

from comfyjobs import procs
from comfyjobs.catalog.bundle import read_bundle
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def _second_folders(tmp: Path) -> tuple[Path, Path]:
    manifests, workflows = tmp / "manifests", tmp / "workflows"
    shutil.copytree(REPO / "manifests", manifests)
    shutil.copytree(REPO / "workflows", workflows)
    path = manifests / "workflows.yaml"
    data = yaml.safe_load(path.read_text())
    data["workflows"]["tiny"]["parameters"]["width"]["max"] = 100
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return manifests, workflows


def _publish(store: CatalogStore, manifests: Path, workflows: Path) -> str:
    bundle, registry = read_bundle(manifests, workflows)
    published = store.publish(
        bundle, source="bench", keep=10, job_ttl_s=3600, workflows=list(registry.workflows)
    )
    return published.version


class Tally:
    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.wrong_version = 0
        self.latencies_s: list[float] = []


async def _client(http: httpx.AsyncClient, post: bool, first: str, tally: Tally, done: asyncio.Event) -> None:
    while not done.is_set():
        t0 = time.perf_counter()
        try:
            if post:
                resp = await http.post("/generate", json={"workflow_id": "tiny", "params": {"width": 150}})
            else:
                resp = await http.get("/workflows")
        except httpx.HTTPError as exc:
            tally.failures[f"{type(exc).__name__}"] += 1
            continue
        tally.latencies_s.append(time.perf_counter() - t0)
        expected = {202, 422} if post else {200}
        key = f"{'POST' if post else 'GET'} {resp.status_code}"
        tally.answers[key] += 1
        if resp.status_code not in expected:
            tally.failures[key] += 1
        elif post and resp.status_code == 202 and resp.json()["catalog_version"] != first:
            tally.wrong_version += 1


async def _switches(
    url: str, store: CatalogStore, versions: list[str], count: int, interval_s: float
) -> list[float]:
    seen_s = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for i in range(count):
            version = versions[(i + 1) % len(versions)]
            t0 = time.perf_counter()
            await asyncio.to_thread(store.activate, version)
            while (await http.get("/workflows")).headers.get("Catalog-Version") != version:
                pass  # (a measurement: the first answer of the new version is the figure)
            seen_s.append(time.perf_counter() - t0)
            await asyncio.sleep(interval_s)
    return seen_s


async def _load(url: str, store: CatalogStore, versions: list[str], args: argparse.Namespace) -> None:
    tally, done = Tally(), asyncio.Event()
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        clients = [
            asyncio.create_task(_client(http, i % 2 == 0, versions[0], tally, done))
            for i in range(args.clients)
        ]
        seen_s = await _switches(url, store, versions, args.switches, args.interval_s)
        done.set()
        await asyncio.gather(*clients)
    total = sum(tally.answers.values())
    print(f"requests answered: {total} ({dict(sorted(tally.answers.items()))})")
    print(f"failed requests: {sum(tally.failures.values())} {dict(tally.failures) or ''}  (goal: 0)")
    print(f"jobs recording another version than the one that accepted them: {tally.wrong_version}  (goal: 0)")
    ms = [s * 1000 for s in seen_s]
    print(
        f"switch, activate -> served: p50 {percentile(ms, 0.5):.1f} ms, max {max(ms):.1f} ms over {len(ms)}"
    )
    lat = [s * 1000 for s in tally.latencies_s]
    print(f"request latency: p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--interval-s", type=float, default=0.5)
    parser.add_argument("--api-workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="comfyjobs-bench-") as tmp_name:
        tmp = Path(tmp_name)
        server = RedisServer(port=free_port(), data_dir=tmp / "redis")
        server.start()
        server.wait_ready()
        api: subprocess.Popen[bytes] | None = None
        try:
            queue = f"bench-catalog-{os.getpid()}"
            client = redis.Redis.from_url(server.url)
            store = CatalogStore(client, queue)
            versions = [
                _publish(store, REPO / "manifests", REPO / "workflows"),
                _publish(store, *_second_folders(tmp)),
            ]
            store.activate(versions[0])
            port = free_port()
            env = dict(
                os.environ,
                REDIS_URL=server.url,
                DATA_DIR=str(tmp / "data"),
                MODEL_DIR=str(tmp / "models"),
                API_HOST=HOST,
                API_PORT=str(port),
                QUEUE_NAME=queue,
                MAX_QUEUE_DEPTH="0",
                LOG_LEVEL="WARNING",
            )
            workers = ["--workers", str(args.api_workers)] if args.api_workers > 1 else []
            with (tmp / "api.log").open("wb") as log:
                api = procs.spawn(
                    [sys.executable, "-m", "comfyjobs", "api", *workers],
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            url = f"http://{HOST}:{port}"
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                if api.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "api.log").read_text()[-3000:])
                time.sleep(0.1)
            print(f"{args.clients} clients, {args.switches} switches {args.interval_s:g} s apart, "
                  f"{args.api_workers} API process(es)")  # fmt: skip
            asyncio.run(_load(url, store, versions, args))
            client.close()
        finally:
            if api is not None:
                procs.stop_group(api, 15)
            server.stop()
    return 0


if __name__ == "__main__":
    run(main)
