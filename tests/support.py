"""Helpers shared by the tests: free ports, waiting on conditions with a deadline, watching job events."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import redis

from comfyjobs import keys
from comfyjobs.jobs.delivery import JobMessages, make_celery
from comfyjobs.jobs.store import decode_events
from comfyjobs.jobs.worker_store import JobStore
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings

T = TypeVar("T")

TERMINAL = {"SUCCESS", "FAILURE", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Re-checks a condition until it holds; for states that announce themselves by no event we can
    subscribe to (a port that starts answering, a process that appears in a table)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class JobEvents:
    """Reads each task's event stream (the job store appends one entry per applied change, in the same
    Lua call that changes the record) and blocks on it with XREAD: no polling of the API, and nothing
    missed whenever the reader starts."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self.changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._cursor: dict[str, str] = defaultdict(lambda: "0-0")

    def close(self) -> None:
        self._redis.close()

    def _read(self, task_id: str, block_ms: int | None) -> None:
        replies = self._redis.xread({keys.job_events(task_id): self._cursor[task_id]}, block=block_ms)
        for _, entries in replies or []:
            for event in decode_events(entries):
                self.changes[task_id].append(event.changes)
                self._cursor[task_id] = event.id

    def wait_terminal(self, task_id: str, timeout_s: float) -> str:
        def finished(changes: list[dict[str, Any]]) -> bool:
            statuses = [c["status"] for c in changes if "status" in c]
            return bool(statuses) and statuses[-1] in TERMINAL

        self.wait_until(task_id, finished, timeout_s, what="final status")
        return self.statuses(task_id)[-1]

    def wait_until(
        self, task_id: str, check: Callable[[list[dict[str, Any]]], bool], timeout_s: float, what: str
    ) -> None:
        """Blocks on the task's stream until ``check(changes so far)`` holds."""
        deadline = time.monotonic() + timeout_s
        self._read(task_id, block_ms=None)
        while not check(self.changes[task_id]):
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [c["status"] for c in self.changes[task_id] if "status" in c]
                raise AssertionError(f"task {task_id}: no {what} after {timeout_s} s (statuses: {seen})")
            # Below redis-py's 5 s socket timeout, so a quiet stream is not taken for a dead connection.
            self._read(task_id, block_ms=max(1, int(min(left, 2.0) * 1000)))

    def progress(self, task_id: str) -> list[dict[str, Any]]:
        self._read(task_id, block_ms=None)
        return [c["progress"] for c in self.changes[task_id] if c.get("progress")]

    def statuses(self, task_id: str) -> list[str]:
        self._read(task_id, block_ms=None)
        return [c["status"] for c in self.changes[task_id] if "status" in c]


def run_to_success(
    api: httpx.Client, events: JobEvents, workflow_id: str, params: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Submits a job (202), waits on its event stream until it succeeds, and returns the task as
    GET /tasks/{id} shows it then."""
    resp = api.post("/generate", json={"workflow_id": workflow_id, "params": params})
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    assert events.wait_terminal(task_id, timeout_s) == "SUCCESS", events.statuses(task_id)
    task: dict[str, Any] = api.get(f"/tasks/{task_id}").json()
    return task


@dataclass
class SseEvent:
    event: str | None
    id: str | None
    data: Any
    comments: list[str]


def sse_events(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parses a text/event-stream, one event per blank-line-terminated block (comments included, so a
    test can see heartbeats)."""
    event: str | None = None
    event_id: str | None = None
    data: list[str] = []
    comments: list[str] = []
    for line in lines:
        if line == "":
            if data or event or comments:
                yield SseEvent(event, event_id, json.loads("\n".join(data)) if data else None, comments)
            event, event_id, data, comments = None, None, [], []
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


def without_links(task: dict[str, Any]) -> dict[str, Any]:
    """A task as GET /tasks shows it, less its links: they are signed afresh on every read (their expiry
    moves with the clock), so two reads of the same task differ there and only there."""
    outputs = [{k: v for k, v in o.items() if k not in ("url", "url_expires_at")} for o in task["outputs"]]
    return {**task, "outputs": outputs}


@contextmanager
def served(app: Any, port: int | None = None) -> Iterator[str]:
    """``app`` served by a real uvicorn on a free port (streams need a real server, not TestClient), in a
    thread; yields its base URL and stops it afterwards."""
    import uvicorn  # the tests that serve import it; the others need not

    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=30, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def worker_store(client: redis.Redis, settings: Settings) -> JobStore:
    """The store a worker of ``settings`` uses (its tickets included)."""
    registry = load_registry(settings.manifest_dir, settings.workflow_dir)
    messages = JobMessages(make_celery(settings, registry), settings.queue_name)
    return JobStore(client, settings.job_ttl_s, settings.queue_name, messages)
