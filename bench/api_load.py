"""Load on the API alone: how many POST /generate it accepts, with what latency, and what it costs.

Starts its own redis-server and `comfyjobs api` process(es) (no worker: accepted jobs just wait in the
queue; MAX_QUEUE_DEPTH=0, so none is refused), then measures, one line per figure:

  1. POST /generate (workflow `tiny`) accepted per second, latency p50/p99, at each --concurrency, for
     1 API process and for each of --processes (`comfyjobs api --workers N`); each on a fresh Redis;
  2. the same POST latency (1 process, concurrency 16) on an empty Redis, then with 300,000 unrelated
     keys in it (DEBUG POPULATE), and their ratio;
  3. --streams open SSE streams (GET /tasks/{id}/events) on 1 API process, and meanwhile /health latency
     p50/p99 over --health-requests requests, and the API's RSS before, at peak and after;
  4. the API's RSS through all of it (sampled every 0.2 s): the largest process, and all together.

The load generator runs in this process (asyncio on uvloop, HTTP/1.1 written and parsed by hand over
keep-alive connections, one per concurrent client, opened 5 ms apart) to cost as little CPU as it can: it
competes with the API and Redis for the same cores. So each POST line gives, over its measured window, the
cores used by the API (and by each of its workers), Redis, the generator and everything else on the
machine ("others": anything not started here, such as tests running meanwhile), and the API's CPU time per
accepted POST, which depends far less than the rates do on what else runs.

    .venv/bin/python bench/api_load.py [--seconds 6] [--concurrency 16 64] [--processes 2 4]
                                       [--streams 1000] [--keys 300000]

Targets (goals of the issue, printed beside the figures; not assertions): >= 1,000 POST /generate
accepted/s with p99 <= 50 ms; POST latency with 300k unrelated keys within 1.2x of an empty Redis; 1,000
open SSE streams with /health p99 <= 100 ms; API RSS under 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psutil
import redis
from harness import free_port, percentile

from comfyjobs import keys, procs
from comfyjobs.redis_server import RedisServer

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MB = 1024 * 1024
CONNECT_GAP_S = 0.005
STARTUP_TIMEOUT_S = 90.0

TARGET_ACCEPTED_PER_S = 1000
TARGET_POST_P99_MS = 50.0
TARGET_KEYS_RATIO = 1.2
TARGET_HEALTH_P99_MS = 100.0
TARGET_RSS_MB = 200.0


# --- The processes: Redis and the API -------------------------------------------------------------------


class Api:
    """One `comfyjobs api [--workers N]`: its process tree, readiness, CPU and memory."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        self.workers = workers
        self.log_path = log_path
        self.port = int(env["API_PORT"])
        argv = [
            sys.executable,
            "-m",
            "comfyjobs",
            "api",
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
        with log_path.open("wb") as log:
            self.proc = procs.spawn(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.root = psutil.Process(self.proc.pid)

    def wait_ready(self, client: redis.Redis) -> None:
        """/health answers and every serving process has subscribed to the change channel (the last step
        of the app's startup), whatever the log level."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with (
                contextlib.suppress(OSError, ValueError),
                socket.create_connection((HOST, self.port), timeout=5) as sock,
            ):
                sock.sendall(get("/health"))
                if sock.recv(4096).startswith(b"HTTP/1.1 200"):
                    [(_, subscribers)] = client.pubsub_numsub(keys.CHANGES)
                    if int(subscribers) >= self.workers:
                        return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_bytes()[-3000:].decode(errors="replace")
                raise RuntimeError(f"the API did not start (exit {self.proc.poll()}):\n{tail}")
            time.sleep(0.1)

    def processes(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self.root, *self.root.children(recursive=True)]
        return []

    def servers(self) -> list[psutil.Process]:
        """The processes that serve requests: the workers under a supervisor, or the one process."""
        if self.workers == 1:
            return [self.root]
        workers = []
        for proc in self.processes()[1:]:  # not multiprocessing's resource tracker
            with contextlib.suppress(psutil.Error):
                if any("spawn_main" in arg for arg in proc.cmdline()):
                    workers.append(proc)
        return workers

    def cpu_s(self) -> dict[int, float]:
        times = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                times[proc.pid] = t.user + t.system
        return times

    def rss(self) -> list[int]:
        """RSS of each process of the tree (the supervisor included)."""
        sizes = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                sizes.append(proc.memory_info().rss)
        return sizes

    def stop(self) -> None:
        procs.stop_group(self.proc, 15)


class RssWatch:
    """Samples the running API's RSS every 0.2 s on a thread, for the maxima of figure 4."""

    def __init__(self) -> None:
        self.api: Api | None = None
        self.max_process = 0
        self.max_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-watch")
        self._thread.start()

    def sample(self) -> list[int]:
        api = self.api
        sizes = api.rss() if api is not None else []
        if sizes:
            self.max_process = max(self.max_process, *sizes)
            self.max_total = max(self.max_total, sum(sizes))
        return sizes

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Stack:
    """A Redis of its own and one `comfyjobs api` on it."""

    server: RedisServer
    redis: redis.Redis
    api: Api

    def redis_cpu_s(self) -> float:
        with contextlib.suppress(psutil.Error, TypeError):
            t = psutil.Process(self.server.pid or 0).cpu_times()
            return float(t.user + t.system)
        return 0.0


@contextlib.contextmanager
def started(tmp: Path, models: Path, watch: RssWatch, name: str, workers: int) -> Iterator[Stack]:
    """A fresh Redis and API (``workers`` processes), stopped on leaving, whatever happened."""
    root = tmp / name
    server = RedisServer(port=free_port(), data_dir=root / "redis")
    try:
        server.start()
        server.wait_ready()
        env = dict(
            os.environ,
            REDIS_URL=server.url,
            DATA_DIR=str(root / "data"),
            MODEL_DIR=str(models),
            API_HOST=HOST,
            API_PORT=str(free_port()),
            QUEUE_NAME=f"bench-{name}-{os.getpid()}",
            MAX_QUEUE_DEPTH="0",
            LOG_LEVEL="WARNING",
        )
        with contextlib.closing(redis.Redis.from_url(server.url)) as client:
            api = Api(env, workers, root / "api.log")
            try:
                api.wait_ready(client)
                watch.api = api
                yield Stack(server, client, api)
            finally:
                watch.sample()
                watch.api = None
                api.stop()
    finally:
        server.stop()


# --- The load generator: HTTP/1.1 by hand, over keep-alive connections ---------------------------------


class Http:
    """One keep-alive connection; requests one at a time. Reconnects after the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            length = int(head[at + 17 : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
            body = await self.reader.readexactly(length) if length else b""
            if b"\r\nconnection: close" in lower:
                self.close()
            return status, body
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def post_generate(i: int) -> bytes:
    body = b'{"workflow_id":"tiny","params":{"color":%d}}' % (i % 0xFFFFFF)
    return (
        b"POST /generate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


@dataclass
class Cpu:
    """CPU seconds used so far: the API's processes, Redis, this process (the generator), the machine."""

    api: dict[int, float]
    redis: float
    generator: float
    machine: float
    at: float

    @classmethod
    def now(cls, stack: Stack) -> Cpu:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        busy += getattr(t, "steal", 0.0)
        return cls(stack.api.cpu_s(), stack.redis_cpu_s(), time.process_time(), busy, time.perf_counter())

    def shares(self, later: Cpu, stack: Stack) -> dict[str, float]:
        """Cores each used between the two: the API (each worker too), Redis, the generator, and the rest
        of the machine (other engineers' tests, here)."""
        wall = later.at - self.at
        used = {pid: later.api[pid] - self.api.get(pid, 0.0) for pid in later.api}
        result = {
            "api": sum(used.values()) / wall,
            "redis": (later.redis - self.redis) / wall,
            "generator": (later.generator - self.generator) / wall,
        }
        result["others"] = max(0.0, (later.machine - self.machine) / wall - sum(result.values()))
        if stack.api.workers > 1:
            workers = sorted((used.get(p.pid, 0.0) / wall for p in stack.api.servers()), reverse=True)
            result |= {f"worker {i + 1}": share for i, share in enumerate(workers)}
        return result


@dataclass
class Load:
    concurrency: int
    seconds: float
    accepted: int = 0  # 202s received in the window
    latencies_ms: list[float] = field(default_factory=list)  # of requests both sent and answered in it
    statuses: Counter[int | str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.accepted / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def line(self, label: str) -> str:
        others = {k: v for k, v in self.statuses.items() if k != 202}
        return (
            f"{label}: {self.per_s:,.0f} accepted/s (target >= {TARGET_ACCEPTED_PER_S:,}), "
            f"p50 {self.p(0.5):.1f} ms, p99 {self.p(0.99):.1f} ms (target <= {TARGET_POST_P99_MS:.0f} ms), "
            f"n={len(self.latencies_ms)}"
            + (f", other answers {dict(others)}" if others else "")
            + f"; CPU, cores of {psutil.cpu_count()}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.cpu.items())
            + (
                f"; API CPU per accepted POST {1000 * self.cpu['api'] / self.per_s:.2f} ms"
                if self.per_s
                else ""
            )
        )


async def post_load(stack: Stack, concurrency: int, seconds: float, warmup_s: float) -> Load:
    """``concurrency`` clients POST back to back for ``warmup_s`` + ``seconds``; only the second part
    counts, and the CPU of each party is measured over it."""
    result = Load(concurrency, seconds)
    counter = iter(range(10**9))
    # time.perf_counter, not loop.time(): uvloop's clock has a resolution of 1 ms.
    t_measure = time.perf_counter() + warmup_s
    t_end = t_measure + seconds

    async def client(i: int) -> None:
        http = Http(stack.api.port)
        try:
            # Connections opened one by one: a burst of them would all be accepted by whichever of
            # several API processes woke first (they share one listening socket).
            await asyncio.sleep(i * CONNECT_GAP_S)
            while (started := time.perf_counter()) < t_end:
                try:
                    status, _ = await http.request(post_generate(next(counter)))
                except (OSError, asyncio.IncompleteReadError) as exc:
                    if started >= t_measure:
                        result.statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                ended = time.perf_counter()
                if t_measure <= ended <= t_end:
                    result.statuses[status] += 1
                    result.accepted += status == 202
                    if status == 202 and started >= t_measure:
                        result.latencies_ms.append((ended - started) * 1000)
        finally:
            http.close()

    async def meter() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        before = Cpu.now(stack)
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        result.cpu = before.shares(Cpu.now(stack), stack)

    await asyncio.gather(meter(), *(client(i) for i in range(concurrency)))
    return result


# --- Figures -------------------------------------------------------------------------------------------


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs the generator on uvloop (as uvicorn runs the API), if installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def throughput(stack: Stack, args: argparse.Namespace, label: str) -> dict[int, Load]:
    results = {}
    for concurrency in args.concurrency:
        load = run_async(partial(post_load, stack, concurrency, args.seconds, args.warmup))
        results[concurrency] = load
        print(load.line(f"[1] POST /generate, {label}, concurrency {concurrency}"), flush=True)
    return results


def unrelated_keys(stack: Stack, args: argparse.Namespace) -> None:
    def measure() -> Load:
        return run_async(partial(post_load, stack, 16, args.seconds, args.warmup))

    empty = measure()
    print(empty.line(f"[2] POST, 1 process, c16, empty Redis ({stack.redis.dbsize():,} keys at the end)"))
    t0 = time.perf_counter()
    try:
        stack.redis.execute_command("DEBUG", "POPULATE", args.keys, "bench")  # type: ignore[no-untyped-call]
        how = "DEBUG POPULATE"
    except redis.ResponseError:  # DEBUG refused (enable-debug-command): pipelined SETs
        with stack.redis.pipeline(transaction=False) as pipe:
            for i in range(args.keys):
                pipe.set(f"bench:{i}", "x")
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
        how = "pipelined SETs"
    print(f"    added {args.keys:,} unrelated keys ({how}) in {time.perf_counter() - t0:.1f} s")
    full = measure()
    print(
        full.line(f"[2] POST, 1 process, c16, +{args.keys:,} keys ({stack.redis.dbsize():,} keys at the end)")
    )
    p50 = percentile(full.latencies_ms, 0.5) / percentile(empty.latencies_ms, 0.5)
    p99 = percentile(full.latencies_ms, 0.99) / percentile(empty.latencies_ms, 0.99)
    print(
        f"[2] latency with {args.keys:,} unrelated keys / empty Redis: p50 x{p50:.2f}, p99 x{p99:.2f}, "
        f"accepted/s x{full.per_s / empty.per_s:.2f} (target: latency within x{TARGET_KEYS_RATIO})"
    )


async def sse_and_health(stack: Stack, streams: int, tasks: int, health_requests: int) -> None:
    api = stack.api
    http = Http(api.port)
    task_ids = []
    for i in range(tasks):
        status, body = await http.request(post_generate(900_000 + i))
        assert status == 202, (status, body)
        task_ids.append(body.split(b'"task_id":"', 1)[1].split(b'"', 1)[0].decode())

    async def health_latencies() -> list[float]:
        latencies = []
        for _ in range(health_requests):
            started = time.perf_counter()
            status, _ = await http.request(get("/health"))
            assert status == 200, status
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
        return latencies

    idle = await health_latencies()
    rss_before = api.rss()

    async def open_stream(task_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(HOST, api.port)
        writer.write(get(f"/tasks/{task_id}/events"))
        seen = b""
        while b"event: queued" not in seen:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"stream closed before its first event: {seen[:300]!r}")
            seen += chunk
        return reader, writer

    t0 = time.perf_counter()
    opened = await asyncio.gather(
        *(open_stream(task_ids[i % len(task_ids)]) for i in range(streams)), return_exceptions=True
    )
    open_s = time.perf_counter() - t0
    live = [s for s in opened if not isinstance(s, BaseException)]
    failed = [s for s in opened if isinstance(s, BaseException)]
    try:
        peak = api.rss()
        during = await health_latencies()
        peak = max(peak, api.rss(), key=sum)
        still_open = sum(1 for reader, _ in live if not reader.at_eof())
    finally:
        for _, writer in live:
            writer.close()
        http.close()
    await asyncio.sleep(1.0)
    rss_after = api.rss()
    print(
        f"[3] {len(live):,} SSE streams open on {tasks} queued tasks in {open_s:.2f} s "
        f"(first event read on each; {len(failed)} failed"
        + (f": {failed[0]!r}" if failed else "")
        + f"), {still_open:,} still open after the /health requests"
    )
    print(
        f"[3] /health with {len(live):,} streams open: p50 {percentile(during, 0.5):.2f} ms, "
        f"p99 {percentile(during, 0.99):.2f} ms (target <= {TARGET_HEALTH_P99_MS:.0f} ms), n={len(during)}; "
        f"without streams: p50 {percentile(idle, 0.5):.2f} ms, p99 {percentile(idle, 0.99):.2f} ms"
    )
    print(
        f"[3] API RSS: before {sum(rss_before) / MB:.0f} MB, with {len(live):,} streams "
        f"{sum(peak) / MB:.0f} MB, after closing them {sum(rss_after) / MB:.0f} MB"
    )


# --- Main -------------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per configuration")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load before each")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--processes", type=int, nargs="*", default=[2, 4], help="API processes beside 1")
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-tasks", type=int, default=5)
    parser.add_argument("--health-requests", type=int, default=200)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _interrupt)  # cleaned up as on Ctrl-C
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * args.streams + 1024  # ours and the API's (which inherits it)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="comfyjobs-api-load-"))
    watch = RssWatch()
    try:
        models = tmp / "models"
        (models / "checkpoints").mkdir(parents=True)
        # Any bytes: the manifests' default checkpoint need only be listed for their defaults to validate.
        (models / "checkpoints" / "smoke-sd15.safetensors").write_bytes(b"stand-in")
        print(f"{psutil.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at the start", flush=True)

        best: tuple[float, str] = (0.0, "")
        for workers in [1, *args.processes]:
            label = f"{workers} process{'es' if workers > 1 else ''}"
            with started(tmp, models, watch, f"post{workers}", workers) as stack:
                for concurrency, load in throughput(stack, args, label).items():
                    best = max(best, (load.per_s, f"{label} at concurrency {concurrency}"))
        print(f"[1] best: {best[1]} ({best[0]:,.0f} accepted/s)")

        with started(tmp, models, watch, "keys", 1) as stack:
            unrelated_keys(stack, args)
            run_async(partial(sse_and_health, stack, args.streams, args.stream_tasks, args.health_requests))

        print(
            f"[4] API RSS, max through all of it: largest process {watch.max_process / MB:.0f} MB "
            f"(target < {TARGET_RSS_MB:.0f} MB); all processes of one API together "
            f"{watch.max_total / MB:.0f} MB"
        )
        print(f"load average {os.getloadavg()[0]:.2f} at the end; took {time.perf_counter() - began:.0f} s")
    finally:
        watch.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # everything started is stopped and removed by then
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
