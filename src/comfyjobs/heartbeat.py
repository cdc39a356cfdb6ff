"""Worker heartbeats: each worker says every few seconds that it is alive and whether its ComfyUI is ready.

All beats live in one hash (``keys.WORKERS``), read whole in O(workers): `/ready`, availability and the
model lists never SCAN the keyspace, nor ask Celery (a broadcast `inspect` blocks for seconds). A beat
counts for three intervals after it was written, so a killed worker drops out by itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Literal

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from comfyjobs import keys
from comfyjobs.comfy.doctor import WorkflowAvailability
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import utc_now

log = logging.getLogger(__name__)


class DeviceMemory(BaseModel):
    """One device as its ComfyUI's /system_stats reports it (on a CPU worker: the machine's memory)."""

    name: str
    type: str
    index: int | None = None
    vram_total: int = 0  # bytes
    vram_free: int = 0


def devices_of(system_stats: Mapping[str, object]) -> list[DeviceMemory]:
    found = system_stats.get("devices")
    devices = []
    for raw in found if isinstance(found, list) else []:
        with contextlib.suppress(ValidationError):
            devices.append(DeviceMemory.model_validate(raw))
    return devices


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
    object_info: str | None = None  # digest of its ComfyUI's /object_info, published at keys.object_info
    # The job classes ("<workflow>@<catalog version>", every kept version) it takes, and why not others.
    runs: list[str] = []
    cannot: dict[str, str] = {}
    labels: list[str] = []  # WORKER_LABELS
    queue: str | None = None  # the queue it consumes (None: a worker of an earlier version)
    loaded_models: list[str] = []  # what its ComfyUI has loaded, as its jobs tell (model affinity)
    model_loads: int = 0  # jobs it ran that needed other models than the ones loaded
    # starting: its ComfyUI is not up; warming: up, running WARMUP_WORKFLOW (no job is taken meanwhile)
    state: Literal["starting", "warming", "ready"] = "ready"
    warmup_error: str | None = None  # the last warm-up failed (the worker takes jobs anyway)
    warmup_s: float | None = None  # how long the last warm-up took
    devices: list[DeviceMemory] = []  # its ComfyUI's devices and their memory (GPU memory metrics)
    jobs_ended: int = 0  # jobs it ran since it started that are over (done, failed or handed back)
    running: list[str] = []  # the task ids it runs now
    expires_at: datetime | None = None  # three intervals after seen_at: gone by then unless beaten again


class Heartbeat:
    """A thread that writes the worker's beat until ``stop()``; stop() removes it at once."""

    def __init__(self, client: redis.Redis, interval_s: float, make_beat: Callable[[], WorkerBeat]) -> None:
        self._redis = client
        self._interval_s = interval_s
        self._make_beat = make_beat
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._worker_id: str | None = None

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        beat = self._make_beat()
        beat = beat.model_copy(update={"expires_at": beat.seen_at + timedelta(seconds=self._interval_s * 3)})
        self._worker_id = beat.worker_id
        try:
            self._redis.hset(keys.WORKERS, beat.worker_id, beat.model_dump_json())
        except redis.RedisError as exc:  # Redis restarting: the next beat will tell
            log.warning("heartbeat not written: %s", exc)

    def stop(self) -> None:
        """Stops beating and removes the beat; safe to call whether or not start() ran."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._worker_id is not None:
            with contextlib.suppress(redis.RedisError):
                self._redis.hdel(keys.WORKERS, self._worker_id)

    def _run(self) -> None:
        # A timer, not a poll: nothing to wait on but the clock.
        while not self._stopping.wait(self._interval_s):
            try:
                self.beat()
            except Exception:  # one failed beat (ComfyUI or Redis away while it was made) is not the last
                log.exception("heartbeat not made; the next in %.0f s", self._interval_s)


def of_queue(beats: list[WorkerBeat], queue: str) -> list[WorkerBeat]:
    """The beats of the workers consuming ``queue`` (every queue's workers beat into one hash), and of
    workers of an earlier version, which do not say."""
    return [b for b in beats if b.queue in (None, queue)]


def fresh_beats(
    raw: Mapping[bytes | str, bytes | str], now: datetime | None = None
) -> tuple[list[WorkerBeat], list[str]]:
    """The live workers' beats in ``HGETALL keys.WORKERS``, and the ids of those that stopped beating."""
    now = now or utc_now()
    beats, stale = [], []
    for field, value in raw.items():
        worker_id = field.decode() if isinstance(field, bytes) else field
        try:
            beat = WorkerBeat.model_validate_json(value)
        except ValidationError:  # a worker of another version: not counted, not fatal
            log.warning("ignoring an unreadable heartbeat of %s", worker_id)
            continue
        if beat.expires_at is None or beat.expires_at <= now:
            stale.append(worker_id)
        else:
            beats.append(beat)
    return sorted(beats, key=lambda b: b.worker_id), stale


async def live_workers(client: aioredis.Redis) -> list[WorkerBeat]:
    """One read of one hash: O(workers), whatever else Redis holds. A killed worker's beat is dropped
    once it is three intervals old. Redis errors become QueueUnavailableError (503 on a request path)."""
    try:
        beats, stale = fresh_beats(await client.hgetall(keys.WORKERS))
        if stale:
            await client.hdel(keys.WORKERS, *stale)
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
    return beats
