"""Model affinity, off and on: what it saves when two workers share a queue of jobs on two checkpoints.

Writes the smoke checkpoint twice (A: smoke-sd15, the workflows' default; B: smoke-b; different seeds:
two files, two models to load), then runs the same burst twice, each time on a fresh Redis, API and two
CPU workers (own DATA_DIR and ComfyUI port each, one MODEL_DIR; a worker takes two jobs at once, see
jobs.delivery.PIPELINE_DEPTH): first with AFFINITY_MAX_SKIP=0 (off), then with the default (on). The
burst: --jobs txt2img jobs (128x128, 2 steps, own seed each) on checkpoints A, B, A, B, ... POSTed one
after another, done when each job's event stream in Redis says SUCCESS. Per run, one line per figure:

  - wall time from the first POST to the last SUCCESS, and jobs/s;
  - model loads: the sum of the workers' `model_loads` in GET /ready at the end (jobs that needed another
    checkpoint than the one loaded; the first job on each worker counts), and per worker the checkpoint
    switches in the order its jobs started (from the job records) as a cross-check;
  - how far jobs were overtaken: max and total `skips` of the job records (hash comfyjobs:job:<id>).

Then the comparison: loads off vs on, and the throughput ratio on/off. Mind the first 2 x 2 jobs: the
workers' four job threads all wait on the empty queue, so the burst's first four jobs go to whichever
thread wakes first, in line, with nothing loaded yet (no preference, both runs): which worker gets which
checkpoint then is chance, and with few jobs it decides much of either run. Affinity acts on the later
claims only; a run where it did shows skips > 0. Outputs are not downloaded (each
worker stores them under its own DATA_DIR; only the API's is served). Jobs wait at most AFFINITY_MAX_WAIT_S
(60 s by default) before they may not be overtaken: keep --jobs small enough on a slow machine.

    COMFYUI_DIR=/path/to/ComfyUI .venv/bin/python bench/affinity.py [--jobs 24] [--quick]

--quick is a smoke run of 8 jobs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import redis
from harness import Watcher, free_port, run, stop_all

from comfyjobs import keys
from comfyjobs.comfy.smoke_model import write_smoke_checkpoint
from comfyjobs.jobs.record import decode_record
from comfyjobs.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / "ComfyUI"))
# A is the workflows' default checkpoint: the workers' check of txt2img wants it present (else a 409).
CHECKPOINTS = ("smoke-sd15.safetensors", "smoke-b.safetensors")
TXT2IMG = {"prompt": "a fox", "steps": 2, "width": 128, "height": 128}
WORKERS = 2
HEARTBEAT_S = 1.0
Procs = list[subprocess.Popen[bytes]]


@dataclass
class Result:
    wall_s: float
    rate: float
    loads: int
    loads_by_worker: list[int]
    switches_by_worker: dict[str, list[str]]  # worker -> checkpoints of its jobs in start order
    max_skips: int
    total_skips: int


def start_service(tmp: Path, models: Path, server: RedisServer, extra: dict[str, str], procs: Procs) -> int:
    """Two CPU workers and the API on ``server`` (appended to ``procs``); returns the API's port."""
    api_port = free_port()
    base = dict(os.environ, REDIS_URL=server.url, MODEL_DIR=str(models), COMFYUI_DIR=str(COMFYUI_DIR),
                MANIFEST_DIR=str(REPO / "manifests"), WORKFLOW_DIR=str(REPO / "workflows"),
                API_PORT=str(api_port), WORKER_HEARTBEAT_S=str(HEARTBEAT_S), LOG_LEVEL="WARNING",
                **extra)  # fmt: skip
    roles = [(f"worker{i}", ["worker", "--cpu"], tmp / f"data{i}") for i in range(WORKERS)]
    for name, argv, data in [*roles, ("api", ["api"], tmp / "data0")]:
        env = dict(base, DATA_DIR=str(data), COMFYUI_BASE_PORT=str(free_port()))
        with (tmp / f"{name}.log").open("wb") as log:
            cmd = [sys.executable, "-m", "comfyjobs", *argv]
            procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    return api_port


def ready_workers(api: httpx.Client) -> list[dict[str, Any]]:
    """The workers GET /ready lists, once it answers 200; [] before."""
    try:
        resp = api.get("/ready")
    except httpx.TransportError:
        return []
    return list(resp.json().get("workers") or []) if resp.status_code == 200 else []


def wait_ready(api: httpx.Client, procs: Procs, tmp: Path) -> float:
    """Until /ready is 200 with both workers' ComfyUI ready; returns the seconds it took."""
    t0 = time.perf_counter()
    while sum(bool(w.get("comfyui_ready")) for w in ready_workers(api)) < WORKERS:
        if any(p.poll() is not None for p in procs) or time.perf_counter() - t0 > 300:
            raise RuntimeError(f"the service did not become ready; logs in {tmp}")
        time.sleep(0.2)
    return time.perf_counter() - t0


def burst(api: httpx.Client, url: str, n: int) -> Result:
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    ids = []
    for i in range(n):  # one after another: the queue holds them in this order, A, B, A, B, ...
        params = {**TXT2IMG, "checkpoint": CHECKPOINTS[i % 2], "seed": i}
        resp = api.post("/workflows/txt2img", json=params)
        if resp.status_code != 202:
            raise RuntimeError(f"POST /workflows/txt2img: {resp.status_code} {resp.text}")
        ids.append(str(resp.json()["task_id"]))
    ended = Watcher(url).wait_succeeded(ids, 1800)  # (in the order submitted)
    time.sleep(3 * HEARTBEAT_S)  # the workers' last beats carry their final model_loads
    workers = ready_workers(api)
    records = [decode_record(client.hgetall(keys.job(t))) for t in ids]
    runs: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: r.started_at or r.created_at):
        runs.setdefault(record.worker or "?", []).append("AB"[CHECKPOINTS.index(record.params["checkpoint"])])
    return Result(
        wall_s=ended - started,
        rate=n / (ended - started),
        loads=sum(int(w.get("model_loads", 0)) for w in workers),
        loads_by_worker=[int(w.get("model_loads", 0)) for w in workers],
        switches_by_worker=runs,
        max_skips=max(r.skips for r in records),
        total_skips=sum(r.skips for r in records),
    )


def run_once(tmp: Path, models: Path, label: str, extra: dict[str, str], n: int) -> Result:
    """A fresh Redis, API and two workers; the burst; everything stopped again."""
    run_dir = tmp / label
    server = RedisServer(port=free_port(), data_dir=run_dir / "redis")
    procs: Procs = []
    try:
        server.start()
        server.wait_ready()
        api_port = start_service(run_dir, models, server, extra, procs)
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as api:
            ready_s = wait_ready(api, procs, run_dir)
            print(f"[{label}] service ready (2 workers + ComfyUIs, cold) in {ready_s:.1f} s", flush=True)
            result = burst(api, server.url, n)
    finally:
        stop_all(procs, server)
    runs = sorted(result.switches_by_worker.items())
    sequences = "; ".join(f"{worker.split('@')[0]} {''.join(seq)}" for worker, seq in runs)
    switches = sum(1 + sum(a != b for a, b in pairwise(seq)) for _, seq in runs)
    print(
        f"[{label}] burst of {n}: wall {result.wall_s:.1f} s\n"
        f"[{label}] throughput: {result.rate:.3f} jobs/s\n"
        f"[{label}] model loads (sum of /ready model_loads): {result.loads} "
        f"(per worker {result.loads_by_worker})\n"
        f"[{label}] checkpoints per worker in start order: {sequences} ({switches} loads counting switches)\n"
        f"[{label}] skips: max {result.max_skips}, total {result.total_skips}",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=24, help="txt2img jobs per burst (alternating A, B)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 jobs")
    args = parser.parse_args()
    n = 8 if args.quick else args.jobs
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up as on Ctrl-C

    began = time.perf_counter()
    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="comfyjobs-affinity-"))
    finished = False
    try:
        models = tmp / "models"
        for seed, name in enumerate(CHECKPOINTS):
            write_smoke_checkpoint(COMFYUI_DIR, models / "checkpoints" / name, seed=seed)
        off = run_once(tmp, models, "off", {"AFFINITY_MAX_SKIP": "0"}, n)
        on = run_once(tmp, models, "on", {}, n)  # the default AFFINITY_MAX_SKIP / AFFINITY_MAX_WAIT_S
        print(
            f"loads: off {off.loads}, on {on.loads} ({on.loads - off.loads:+d})\n"
            f"throughput on/off: x{on.rate / off.rate:.2f} ({off.rate:.3f} -> {on.rate:.3f} jobs/s)\n"
            f"max skips: off {off.max_skips}, on {on.max_skips}",
            flush=True,
        )
        print(f"load average {os.getloadavg()[0]:.2f} at the end; took {time.perf_counter() - began:.0f} s")
        finished = True
    finally:
        if finished:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
