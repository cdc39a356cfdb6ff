"""What the benches share: free ports, percentiles, waiting for jobs on their event streams, stopping the
processes a bench started, and a main that says "interrupted" on Ctrl-C. Imported by the bench scripts
(run as `python bench/<name>.py`, so this folder is on the path)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from comfyjobs import keys
from comfyjobs.jobs.store import decode_events
from comfyjobs.redis_server import RedisServer

TERMINAL = ("SUCCESS", "FAILURE", "CANCELLED")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


WATCH_WINDOW = 16  # the streams one XREAD blocks on: the oldest of the tasks not seen finished


class Watcher:
    """Blocks on the tasks' event streams (XREAD) and notes when each reaches a terminal status.

    One XREAD names at most WATCH_WINDOW streams, those of the first tasks (in the order given) not seen
    finished yet: naming every unfinished task's stream in each call would cost Redis, and this process,
    O(tasks) per finished job (O(n^2) a burst) on the cores the service runs on. A task is noted when it
    is seen finished: one finished outside the window is noted once the window reaches it, so give the
    tasks in the order they were submitted (the order they mostly finish in). Once 16 or fewer are left,
    all are in the window, so a burst's end is seen when it happens."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.done: dict[str, tuple[str, float]] = {}  # task id -> (final status, perf_counter)
        self.cursors: dict[str, str] = {}

    def wait(self, task_ids: Iterable[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [t for t in dict.fromkeys(task_ids) if t not in self.done]
        for task_id in pending:
            self.cursors.setdefault(task_id, "0-0")
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} job(s) unfinished")
            window = pending[:WATCH_WINDOW]
            waiting = {keys.job_events(t): self.cursors[t] for t in window}
            replies: Any = self.client.xread(waiting, block=1000)  # type: ignore[arg-type]
            for stream, entries in replies or []:
                task_id = stream.decode().rsplit(":", 1)[-1]
                for event in decode_events(entries):
                    self.cursors[task_id] = event.id
                    if (status := event.changes.get("status")) in TERMINAL:
                        self.done[task_id] = (status, time.perf_counter())
            pending[:WATCH_WINDOW] = [t for t in window if t not in self.done]  # (only these were read)

    def wait_succeeded(self, task_ids: Iterable[str], timeout_s: float) -> float:
        """Returns when the last of them finished (perf_counter); raises if any did not succeed."""
        task_ids = list(task_ids)
        self.wait(task_ids, timeout_s)
        failed = [t for t in task_ids if self.done[t][0] != "SUCCESS"]
        if failed:
            raise RuntimeError(f"{len(failed)} job(s) did not succeed, e.g. {failed[0]}")
        return max(self.done[t][1] for t in task_ids)


def stop_all(procs: list[subprocess.Popen[bytes]], server: RedisServer | None = None) -> None:
    """SIGTERM to each, a kill after 60 s; then the Redis."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()
    if server is not None:
        server.stop()


def run(main: Callable[[], int]) -> None:
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
