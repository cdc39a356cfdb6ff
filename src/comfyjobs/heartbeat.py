"""Worker heartbeats: each worker says every few seconds that it is alive and whether its ComfyUI is ready.

The API's `/ready` reads these keys instead of asking Celery (a broadcast `inspect` blocks for seconds).
A key expires three intervals after the last beat, so a killed worker drops out by itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from comfyjobs import keys
from comfyjobs.comfy.doctor import WorkflowAvailability
from comfyjobs.errors import QueueUnavailableError

log = logging.getLogger(__name__)


class WorkerBeat(BaseModel):
    worker_id: str
    device: str  # "cpu" or "gpu:N"
    pid: int
    comfyui_ready: bool
    comfyui_pid: int | None
    comfyui_restarts: int
    started_at: datetime
    seen_at: datetime
    # What this worker's ComfyUI can run, as `comfy.doctor` found it (empty until first checked).
    workflows: dict[str, WorkflowAvailability] = {}
    # Model files per folder the manifests choose from (`choices_from`), for an API without this disk.
    models: dict[str, list[str]] = {}


class Heartbeat:
    """A thread that writes the worker's beat until ``stop()``; stop() deletes the key at once."""

    def __init__(self, client: redis.Redis, interval_s: float, make_beat: Callable[[], WorkerBeat]) -> None:
        self._redis = client
        self._interval_s = interval_s
        self._make_beat = make_beat
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._key: str | None = None

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        beat = self._make_beat()
        self._key = keys.worker(beat.worker_id)
        try:
            ttl_ms = int(self._interval_s * 3 * 1000)
            self._redis.set(self._key, beat.model_dump_json(), px=ttl_ms)
        except redis.RedisError as exc:  # Redis restarting: the next beat will tell
            log.warning("heartbeat not written: %s", exc)

    def stop(self) -> None:
        """Stops beating and deletes the key; safe to call whether or not start() ran."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._key is not None:
            with contextlib.suppress(redis.RedisError):
                self._redis.delete(self._key)

    def _run(self) -> None:
        # A timer, not a poll: nothing to wait on but the clock.
        while not self._stopping.wait(self._interval_s):
            self.beat()


async def live_workers(client: aioredis.Redis) -> list[WorkerBeat]:
    """Redis errors become QueueUnavailableError (503 with Retry-After on a request path)."""
    beats = []
    try:
        async for key in client.scan_iter(match=keys.WORKER_PATTERN, count=100):
            raw = await client.get(key)
            if not raw:
                continue  # expired between SCAN and GET
            try:
                beats.append(WorkerBeat.model_validate_json(raw))
            except ValidationError:  # a worker of another version: not counted, not fatal
                log.warning("ignoring an unreadable heartbeat at %s", key)
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
    return sorted(beats, key=lambda b: b.worker_id)
