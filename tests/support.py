"""Helpers shared by the tests: free ports, waiting on conditions with a deadline, watching job events."""

from __future__ import annotations

import json
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from comfyjobs import keys

T = TypeVar("T")

TERMINAL = {"SUCCESS", "FAILURE"}


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
    """Subscribes to every task's change events (published by the job store on each applied update)
    *before* a test submits, so no change is missed, then waits on them: no polling of the API."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._pubsub = self._redis.pubsub()
        self._pubsub.psubscribe(keys.job_events("*"))
        self._pubsub.get_message(timeout=5)  # the psubscribe confirmation
        self.changes: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def close(self) -> None:
        self._pubsub.close()
        self._redis.close()

    def _drain_one(self, timeout_s: float) -> None:
        msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
        if msg and msg["type"] == "pmessage":
            task_id = msg["channel"].decode().rsplit(":", 1)[-1]
            change = {k: json.loads(v) for k, v in json.loads(msg["data"]).items()}
            self.changes[task_id].append(change)

    def wait_terminal(self, task_id: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = [c["status"] for c in self.changes[task_id] if "status" in c]
            if statuses and statuses[-1] in TERMINAL:
                return statuses[-1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"task {task_id} not finished after {timeout_s} s: {statuses}")
            self._drain_one(min(left, 1.0))

    def progress(self, task_id: str) -> list[dict[str, Any]]:
        return [c["progress"] for c in self.changes[task_id] if c.get("progress")]

    def statuses(self, task_id: str) -> list[str]:
        return [c["status"] for c in self.changes[task_id] if "status" in c]
