"""Round-trip figures through the whole service: API → Redis/Celery → worker → ComfyUI → outputs.

Starts its own Redis, one CPU worker and the API (like `comfyjobs up`), then measures:
  - tiny: submit → SUCCESS seen on the job's event channel, one job at a time (latency), and a burst
    submitted back to back (throughput);
  - smoke txt2img: 256x256, 6 steps, on the smoke checkpoint;
  - media: POST /assets of a 512x512 PNG, POST /generate with a 256x256 picture as a data: URL (decoded,
    hashed and stored before the 202), and `upscale` (x2, model-free) from an uploaded asset, submit →
    SUCCESS (input staged into ComfyUI, output stored).

    .venv/bin/python bench/service_roundtrip.py [--tiny-jobs 50] [--burst 100] [--txt2img-runs 3]
                                                [--media-runs 10]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from harness import Watcher, free_port, percentile, run, stop_all
from PIL import Image

from comfyjobs.comfy.smoke_model import write_smoke_checkpoint
from comfyjobs.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent


def noise_png(size: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def media(api: httpx.Client, watcher: Watcher, submit: Callable[..., tuple[str, float]], runs: int) -> None:
    uploads, inline, upscales = [], [], []
    for i in range(runs):
        picture = noise_png(512, seed=i)  # new bytes each time: nothing deduplicated
        started = time.perf_counter()
        resp = api.post("/assets", files={"file": (f"in{i}.png", picture, "image/png")})
        resp.raise_for_status()
        uploads.append((time.perf_counter() - started) * 1000)
        asset = resp.json()["id"]

        # 256x256 inline: a data: URL rides in a JSON body, within MAX_BODY_BYTES (1 MiB by default).
        data_url = "data:image/png;base64," + base64.b64encode(noise_png(256, seed=10_000 + i)).decode()
        started = time.perf_counter()
        task_id, _ = submit("upscale", image=data_url, scale_by=0.5)
        inline.append((time.perf_counter() - started) * 1000)
        watcher.wait({task_id}, 120)

        task_id, started = submit("upscale", image=asset, scale_by=2)
        watcher.wait({task_id}, 120)
        status, ended = watcher.done[task_id]
        assert status == "SUCCESS", api.get(f"/tasks/{task_id}").json()
        upscales.append((ended - started) * 1000)
    print(
        f"media, 512x512 PNG (~{len(noise_png(512, 0)) // 1024} KB), n={runs}: "
        f"POST /assets median {statistics.median(uploads):.1f} ms; "
        f"POST /generate with a 256x256 data: URL median {statistics.median(inline):.1f} ms; "
        f"upscale x2 round trip median {statistics.median(upscales):.1f} ms, "
        f"p95 {percentile(upscales, 0.95):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny-jobs", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--txt2img-runs", type=int, default=3)
    parser.add_argument("--media-runs", type=int, default=10)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="comfyjobs-bench-"))
    models = tmp / "models"
    write_smoke_checkpoint(REPO / "ComfyUI", models / "checkpoints" / "smoke-sd15.safetensors")
    server = RedisServer(port=free_port(), data_dir=tmp / "redis")
    server.start()
    server.wait_ready()
    api_port = free_port()
    env = dict(os.environ, REDIS_URL=server.url, DATA_DIR=str(tmp / "data"), MODEL_DIR=str(models),
               API_PORT=str(api_port), COMFYUI_BASE_PORT=str(free_port()), LOG_LEVEL="WARNING")  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "comfyjobs", role, *extra],
            env=env,
            cwd=REPO,
            stdout=(tmp / f"{role}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for role, extra in (("worker", ["--cpu"]), ("api", []))
    ]
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
    watcher = Watcher(server.url)
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if api.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > 300:
                raise TimeoutError("service did not become ready")
            time.sleep(0.2)
        print(f"service ready (worker + ComfyUI cold start) in {time.perf_counter() - t0:.1f} s")

        def submit(workflow_id: str, **params: object) -> tuple[str, float]:
            started = time.perf_counter()
            resp = api.post("/generate", json={"workflow_id": workflow_id, "params": params})
            resp.raise_for_status()
            return resp.json()["task_id"], started

        # Warm-up (first prompt loads ComfyUI's node code paths).
        task_id, _ = submit("tiny", color=1)
        watcher.wait({task_id}, 60)

        latencies = []
        for i in range(args.tiny_jobs):
            task_id, started = submit("tiny", color=1000 + i)  # vary a value: ComfyUI caches identical work
            watcher.wait({task_id}, 60)
            status, ended = watcher.done[task_id]
            assert status == "SUCCESS", status
            latencies.append((ended - started) * 1000)
        print(
            f"tiny round trip, one at a time (n={len(latencies)}): "
            f"median {statistics.median(latencies):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms, "
            f"min {min(latencies):.1f} ms"
        )

        burst_start = time.perf_counter()
        ids = [submit("tiny", color=100_000 + i)[0] for i in range(args.burst)]
        submitted = time.perf_counter() - burst_start
        watcher.wait(ids, 600)
        total = max(watcher.done[t][1] for t in ids) - burst_start
        failures = sum(1 for t in ids if watcher.done[t][0] != "SUCCESS")
        print(
            f"tiny burst of {args.burst}: submitted in {submitted:.2f} s, all done in {total:.2f} s "
            f"({args.burst / total:.1f} jobs/s), failures {failures}"
        )

        smoke = []
        for i in range(args.txt2img_runs):
            task_id, started = submit("txt2img", prompt="a red fox", steps=6, width=256, height=256, seed=i)
            watcher.wait({task_id}, 600)
            status, ended = watcher.done[task_id]
            assert status == "SUCCESS", api.get(f"/tasks/{task_id}").json()
            smoke.append(ended - started)
        print(
            "smoke txt2img 256x256, 6 steps: "
            + ", ".join(f"{s:.2f} s" for s in smoke)
            + " (first includes the checkpoint load)"
        )
        media(api, watcher, submit, args.media_runs)
    finally:
        stop_all(procs, server)
    return 0


if __name__ == "__main__":
    run(main)
