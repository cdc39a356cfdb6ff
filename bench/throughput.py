"""comfyjobs against raw ComfyUI, side by side, on the same ComfyUI: what the service costs per job.

Starts its own Redis, one CPU worker (which starts and manages its ComfyUI) and the API, like
bench/service_roundtrip.py. "Raw" means talking to that same ComfyUI directly (POST /prompt, then its
websocket's `executing` message with node None), always while no comfyjobs job runs, so both sides get
the same process, caches and cores. One line per figure, with the issue's goal beside it (no assertions):

  1. raw ComfyUI, workflow `tiny` (EmptyImage -> SaveImage): a burst of --jobs prompts (jobs/s) and
     --sequential prompts one at a time (round trip median, p95);
  2. comfyjobs burst: --jobs POST /workflows/tiny, done when each task's event stream in Redis says SUCCESS;
     jobs/s and the ratio to raw (goal >= 0.85);
  3. comfyjobs round trip, one at a time: POST -> `success` on GET /tasks/{id}/events; median, p95 and
     the difference of the medians to raw (goal <= raw + 5 ms);
  4. ComfyUI's idle time between consecutive prompts of each burst, from its own /history timestamps
     (execution_start of the next minus execution_success of the previous, 1 ms resolution, clipped
     at 0); median, p95 (goal: median <= 2 ms for comfyjobs);
  5. smoke txt2img (256x256, 4 steps, smoke checkpoint), --txt2img jobs as a burst through comfyjobs and
     the exact graph of such a job (GET /api/v2/jobs/{id}/workflow) raw; jobs/s and ratio (goal >= 0.99).
     Every job has its own seed (tiny: its own colour), so ComfyUI's cache never skips the work.

Bursts run side by side in halves, raw, comfyjobs, comfyjobs, raw, so that a drift in the machine's speed
favours neither side; a side's jobs/s is over its two halves. Each half's line ([4], [5]) also gives
ComfyUI's busy share, a prompt's execution time, how long after the first POST the first prompt started
and after the last one ended the client saw it done, and the CPU seconds used meanwhile by comfyjobs'
processes (API, worker, Redis), by ComfyUI and by this bench itself (the client of both sides, which
shares the cores). On a 2-core machine anything else running skews all of it: compare the load averages
printed at the start and the end.

    COMFYUI_DIR=/path/to/ComfyUI .venv/bin/python bench/throughput.py [--jobs 200] [--sequential 30]
                                                                      [--txt2img 6] [--gpu N] [--quick]

--quick is a smoke run (40 / 10 / 2). --gpu N: the worker, and so its ComfyUI, on GPU N, not the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psutil
import websocket
from harness import Watcher, free_port, percentile, run, stop_all

from comfyjobs.comfy.smoke_model import write_smoke_checkpoint
from comfyjobs.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / "ComfyUI"))
TARGET_BURST_RATIO = 0.85
TARGET_EXTRA_MS = 5.0
TARGET_GAP_MS = 2.0
TARGET_TXT2IMG_RATIO = 0.99
TXT2IMG = {"prompt": "a fox", "steps": 4, "width": 256, "height": 256}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(ms: list[float]) -> str:
    return f"median {median(ms):.1f} ms, p95 {percentile(ms, 0.95):.1f} ms (n={len(ms)})"


class RawComfy:
    """A plain ComfyUI client: POST /prompt with our client id; one websocket thread notes completions."""

    def __init__(self, port: int) -> None:
        self.client_id = uuid.uuid4().hex
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId={self.client_id}")
        self.ws.settimeout(None)
        self.done: dict[str, float] = {}
        self.failed: set[str] = set()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True, name="raw-ws").start()

    def _read(self) -> None:
        while True:
            try:
                message = self.ws.recv()
            except (websocket.WebSocketException, OSError):
                return
            if not message:
                return  # closed
            if not isinstance(message, str):
                continue  # preview frames
            parsed = json.loads(message)
            data = parsed.get("data") or {}
            with self.changed:
                if parsed.get("type") == "execution_error":
                    self.failed.add(data.get("prompt_id", ""))
                elif parsed.get("type") == "executing" and data.get("node") is None and data.get("prompt_id"):
                    self.done[data["prompt_id"]] = time.perf_counter()
                    self.changed.notify_all()

    def submit(self, graph: dict[str, Any]) -> str:
        resp = self.http.post("/prompt", json={"prompt": graph, "client_id": self.client_id})
        resp.raise_for_status()
        return str(resp.json()["prompt_id"])

    def wait(self, prompt_ids: Iterable[str], timeout_s: float) -> float:
        prompt_ids = set(prompt_ids)
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not prompt_ids <= self.done.keys():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(prompt_ids - self.done.keys())} prompt(s) unfinished")
                self.changed.wait(0.5)  # in slices: a signal is handled within one
        if prompt_ids & self.failed:
            raise RuntimeError(f"{len(prompt_ids & self.failed)} prompt(s) failed in ComfyUI")
        return max(self.done[p] for p in prompt_ids)

    def history(self) -> dict[str, Any]:
        return dict(self.http.get("/history").raise_for_status().json())

    def close(self) -> None:
        self.ws.close()
        self.http.close()


class Bursts:
    """Runs a burst and describes it: jobs/s, then ComfyUI's view of it (its /history timestamps, ms
    since the epoch, 1 ms resolution) and the CPU that comfyjobs' own processes and ComfyUI used meanwhile."""

    def __init__(self, raw: RawComfy, pids: list[int]) -> None:
        self.raw = raw
        tree = [q for pid in pids for p in [psutil.Process(pid)] for q in [p, *p.children(recursive=True)]]
        self.comfy = [p for p in tree if "main.py" in p.cmdline()]  # the worker's ComfyUI
        self.service = [p for p in tree if p not in self.comfy]  # API, worker, Redis

    def cpu_s(self) -> tuple[float, float]:
        return sum(self.by_role().values()), self._total(self.comfy)

    @staticmethod
    def _total(procs: list[psutil.Process]) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    def by_role(self) -> dict[str, float]:
        """CPU seconds so far of comfyjobs' own processes: the API, the worker and Redis."""
        roles: dict[str, float] = {}
        for proc in self.service:
            line = " ".join(proc.cmdline())
            role = next((r for r in ("api", "worker") if f"comfyjobs {r}" in line), "redis")
            roles[role] = roles.get(role, 0.0) + self._total([proc])
        return roles

    def run(
        self, submit: Callable[[int], str], n: int, wait: Callable[[list[str], float], float]
    ) -> tuple[float, str]:
        """One burst of ``n`` (``submit(0..n-1)``, 8 at a time); its seconds and its description."""
        before, cpu0, roles0 = set(self.raw.history()), self.cpu_s(), self.by_role()
        client0 = own_cpu_s()
        with ThreadPoolExecutor(8) as pool:
            started = time.perf_counter()
            ended = wait(list(pool.map(submit, range(n))), 1800)  # (in the order submitted)
        client_s = own_cpu_s() - client0
        (service_s, comfy_s), history, roles = self.cpu_s(), self.raw.history(), self.by_role()
        per_job = ", ".join(f"{r} {(roles[r] - roles0[r]) * 1000 / n:.1f}" for r in sorted(roles))
        spans = []
        for prompt_id in set(history) - before:
            stamps = {name: data["timestamp"] for name, data in history[prompt_id]["status"]["messages"]}
            spans.append((stamps["execution_start"], stamps["execution_success"]))
        spans.sort()
        gaps = [float(max(0, start - end)) for (_, end), (start, _) in pairwise(spans)]
        busy = sum(end - start for start, end in spans) / max(1, spans[-1][1] - spans[0][0])
        epoch_ms = (time.time() - time.perf_counter()) * 1000  # perf_counter -> ms since the epoch
        lead, tail = spans[0][0] - epoch_ms - started * 1000, epoch_ms + ended * 1000 - spans[-1][1]
        return ended - started, (
            f"{n} jobs at {n / (ended - started):.1f}/s; ComfyUI idle between prompts median "
            f"{median(gaps):.1f} ms, p95 {percentile(gaps, 0.95):.1f} ms, max {max(gaps, default=0):.0f} ms; "
            f"busy {busy:.0%} of its span; a prompt runs {median([float(e - s) for s, e in spans]):.0f} ms; "
            f"first started {lead:.0f} ms after the first POST, last seen done {tail:.0f} ms after it "
            f"ended; CPU s over {ended - started:.1f} s: comfyjobs processes {service_s - cpu0[0]:.1f} "
            f"(ms per job: {per_job}), ComfyUI {comfy_s - cpu0[1]:.1f}, this bench (its client) "
            f"{client_s:.1f} ({client_s * 1000 / n:.1f} ms per job)"
        )

    def side_by_side(
        self,
        raw: tuple[Callable[[int], str], Callable[[list[str], float], float]],
        ours: tuple[Callable[[int], str], Callable[[list[str], float], float]],
        n: int,
    ) -> tuple[float, float, list[str], list[str]]:
        """``n`` jobs a side, in halves ordered raw, ours, ours, raw, so that a drift in the machine's speed
        (clocks, caches, a neighbour) favours neither side; each side's jobs/s over its two halves, and
        the halves' descriptions. ``submit`` gets distinct numbers across the halves."""
        seconds = {"raw": 0.0, "ours": 0.0}
        lines: dict[str, list[str]] = {"raw": [], "ours": []}
        sides = {"raw": raw, "ours": ours}
        first, second = n // 2, n - n // 2
        for side, count, offset in (("raw", first, 0), ("ours", first, 0), ("ours", second, first),
                                    ("raw", second, first)):  # fmt: skip
            if count:
                submit, wait = sides[side]
                took_s, line = self.run(shifted(submit, offset), count, wait)
                seconds[side] += took_s
                lines[side].append(line)
        return n / seconds["raw"], n / seconds["ours"], lines["raw"], lines["ours"]


def own_cpu_s() -> float:
    """CPU seconds this process (the bench: the client of both sides) used so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def shifted(submit: Callable[[int], str], offset: int) -> Callable[[int], str]:
    return lambda i: submit(offset + i)


def sse_final(api: httpx.Client, task_id: str) -> float:
    """Follows GET /tasks/{id}/events to the final event; returns when it arrived."""
    with api.stream("GET", f"/tasks/{task_id}/events", timeout=120) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line in ("event: failure", "event: cancelled"):
                raise RuntimeError(f"task {task_id}: {line}")
            if line == "event: success":
                return time.perf_counter()
    raise RuntimeError(f"task {task_id}: the stream ended without a final event")


def start_service(
    tmp: Path, server: RedisServer, procs: list[subprocess.Popen[bytes]], gpu: int | None
) -> tuple[int, int]:
    """Redis, then one worker (on the CPU, or on GPU ``gpu``) and the API (appended to ``procs`` as they
    start); their ports."""
    models = tmp / "models"
    write_smoke_checkpoint(COMFYUI_DIR, models / "checkpoints" / "smoke-sd15.safetensors")
    server.start()
    server.wait_ready()
    api_port, comfy_port = free_port(), free_port()
    env = dict(os.environ, REDIS_URL=server.url, DATA_DIR=str(tmp / "data"), MODEL_DIR=str(models),
               COMFYUI_DIR=str(COMFYUI_DIR), MANIFEST_DIR=str(REPO / "manifests"),
               WORKFLOW_DIR=str(REPO / "workflows"), COMFYUI_BASE_PORT=str(comfy_port),
               API_PORT=str(api_port), LOG_LEVEL="WARNING")  # fmt: skip
    where = ["--cpu"] if gpu is None else ["--gpu", str(gpu)]
    for role, extra in (("worker", where), ("api", [])):
        with (tmp / f"{role}.log").open("wb") as log:
            argv = [sys.executable, "-m", "comfyjobs", role, *extra]
            procs.append(subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    return api_port, comfy_port  # the worker's ComfyUI listens on COMFYUI_BASE_PORT + its GPU index


def wait_ready(api: httpx.Client, procs: list[subprocess.Popen[bytes]], tmp: Path) -> float:
    t0 = time.perf_counter()
    while True:
        try:
            if api.get("/ready").status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        if any(p.poll() is not None for p in procs) or time.perf_counter() - t0 > 300:
            raise RuntimeError(f"the service did not become ready; logs in {tmp}")
        time.sleep(0.2)


def measure(
    args: argparse.Namespace, api: httpx.Client, watcher: Watcher, raw: RawComfy, bursts: Bursts
) -> None:
    tiny = json.loads((REPO / "workflows" / "tiny.json").read_text())

    def raw_tiny(color: int) -> str:
        graph = json.loads(json.dumps(tiny))
        graph["1"]["inputs"]["color"] = color
        return raw.submit(graph)

    def ours(workflow_id: str, params: dict[str, Any]) -> str:
        resp = api.post(f"/workflows/{workflow_id}", json=params)
        resp.raise_for_status()
        return str(resp.json()["task_id"])

    # Warm-up, both ways (ComfyUI's first prompt imports node code; the API's first request warms its paths,
    # the first event stream its subscriber of change notices).
    raw.wait({raw_tiny(16_000_000 + i) for i in range(3)}, 60)
    watcher.wait_succeeded({ours("tiny", {"color": 16_100_000 + i}) for i in range(3)}, 60)
    sse_final(api, ours("tiny", {"color": 16_100_003}))

    # [1] and [3]: one at a time.
    raw_seq, our_seq = [], []
    for i in range(args.sequential):
        started = time.perf_counter()
        prompt_id = raw_tiny(200_000 + i)
        raw_seq.append((raw.wait({prompt_id}, 60) - started) * 1000)
    for i in range(args.sequential):
        started = time.perf_counter()
        task_id = ours("tiny", {"color": 300_000 + i})
        our_seq.append((sse_final(api, task_id) - started) * 1000)
        watcher.wait_succeeded({task_id}, 60)  # finished in the store too, before the next one
    print(f"[1] raw ComfyUI tiny round trip, one at a time: {spread(raw_seq)}", flush=True)
    extra = median(our_seq) - median(raw_seq)
    print(
        f"[3] comfyjobs tiny round trip (POST -> SSE success): {spread(our_seq)}; median - raw "
        f"{extra:+.1f} ms (goal <= +{TARGET_EXTRA_MS:.0f} ms)",
        flush=True,
    )

    # [1], [2] and [4]: bursts, side by side.
    raw_rate, our_rate, raw_lines, our_lines = bursts.side_by_side(
        (raw_tiny, raw.wait),
        (lambda i: ours("tiny", {"color": 100_000 + i}), watcher.wait_succeeded),
        args.jobs,
    )
    print(
        f"[1] raw ComfyUI tiny burst of {args.jobs}: {raw_rate:.1f} jobs/s\n"
        f"[2] comfyjobs tiny burst of {args.jobs}: {our_rate:.1f} jobs/s, x{our_rate / raw_rate:.2f} of raw "
        f"(goal >= x{TARGET_BURST_RATIO})\n"
        + "".join(
            f"[4] comfyjobs tiny burst (goal: idle median <= {TARGET_GAP_MS:.0f} ms): {line}\n"
            for line in our_lines
        )
        + "".join(f"[4] raw tiny burst: {line}\n" for line in raw_lines),
        end="",
        flush=True,
    )

    # [5] txt2img: one job loads the checkpoint and gives us the exact graph comfyjobs runs.
    if args.txt2img < 1:
        return
    first = ours("txt2img", {**TXT2IMG, "seed": 1})
    watcher.wait_succeeded({first}, 600)
    graph = api.get(f"/api/v2/jobs/{first}/workflow").raise_for_status().json()["workflow"]
    sampler_id = next(k for k, node in graph.items() if node["class_type"] == "KSampler")

    def raw_txt2img(i: int) -> str:
        copy = json.loads(json.dumps(graph))
        copy[sampler_id]["inputs"]["seed"] = 1000 + i
        return raw.submit(copy)

    raw_rate, our_rate, raw_lines, our_lines = bursts.side_by_side(
        (raw_txt2img, raw.wait),
        (lambda i: ours("txt2img", {**TXT2IMG, "seed": 2000 + i}), watcher.wait_succeeded),
        args.txt2img,
    )
    print(
        f"[5] smoke txt2img 256x256, 4 steps, burst of {args.txt2img}: raw {raw_rate:.3f} jobs/s, comfyjobs "
        f"{our_rate:.3f} jobs/s, x{our_rate / raw_rate:.3f} (goal >= x{TARGET_TXT2IMG_RATIO})\n"
        + "".join(f"[5] comfyjobs txt2img burst: {line}\n" for line in our_lines)
        + "".join(f"[5] raw txt2img burst: {line}\n" for line in raw_lines),
        end="",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="tiny jobs per burst")
    parser.add_argument("--sequential", type=int, default=30, help="tiny jobs one at a time")
    parser.add_argument("--txt2img", type=int, default=6, help="smoke txt2img jobs per burst (0: none)")
    parser.add_argument("--gpu", type=int, metavar="N", help="the worker on GPU N (default: on the CPU)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 / 10 / 2")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.sequential, args.txt2img = 40, 10, 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up as on Ctrl-C

    began = time.perf_counter()
    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="comfyjobs-throughput-"))
    server = RedisServer(port=free_port(), data_dir=tmp / "redis")
    procs: list[subprocess.Popen[bytes]] = []
    raw: RawComfy | None = None
    finished = False
    try:
        api_port, comfy_port = start_service(tmp, server, procs, args.gpu)
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as api:
            ready_s = wait_ready(api, procs, tmp)
            print(f"service ready (worker + ComfyUI cold start) in {ready_s:.1f} s", flush=True)
            raw = RawComfy(comfy_port)
            assert server.pid is not None
            bursts = Bursts(raw, [server.pid, *(p.pid for p in procs)])
            measure(args, api, Watcher(server.url), raw, bursts)
        print(f"load average {os.getloadavg()[0]:.2f} at the end; took {time.perf_counter() - began:.0f} s")
        finished = True
    finally:
        if raw is not None:
            raw.close()
        stop_all(procs, server)
        if finished:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
