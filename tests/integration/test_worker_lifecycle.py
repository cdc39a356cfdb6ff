"""A worker owns its ComfyUI: it restarts it when it dies and never leaves it behind."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from comfyjobs import keys
from tests.integration.conftest import WORKER_READY_TIMEOUT_S, service_env, start
from tests.support import wait_for

Beat = dict[str, object]


def beat_of(client: redis.Redis, worker_pid: int) -> Beat | None:
    for raw in client.hvals(keys.WORKERS):
        beat = json.loads(raw)
        if beat.get("pid") == worker_pid:
            return dict(beat)
    return None


@pytest.fixture
def spawn_worker(
    redis_url: str, model_dir: Path, tmp_path: Path
) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], psutil.Process]]]:
    """Starts a CPU worker (its own data dir and ComfyUI port) and waits until its ComfyUI is ready."""
    started: list[subprocess.Popen[bytes]] = []
    client = redis.Redis.from_url(redis_url)

    def spawn() -> tuple[subprocess.Popen[bytes], psutil.Process]:
        env = service_env(redis_url, tmp_path, model_dir, QUEUE_NAME="lifecycle-test")
        worker = start(["worker", "--cpu"], env, tmp_path / "worker.log")
        started.append(worker)

        def ready() -> Beat | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            beat = beat_of(client, worker.pid)
            return beat if beat and beat["comfyui_ready"] else None

        beat = wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what="the worker's ComfyUI", interval_s=0.5)
        comfy = psutil.Process(int(beat["comfyui_pid"]))  # type: ignore[call-overload]
        assert "main.py" in comfy.cmdline()
        return worker, comfy

    yield spawn
    for worker in started:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    client.close()


def gone(proc: psutil.Process, timeout_s: float) -> bool:
    _, alive = psutil.wait_procs([proc], timeout=timeout_s)
    return not alive or alive[0].status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_comfyui_outlives_its_worker(
    sig: signal.Signals,
    spawn_worker: Callable[[], tuple[subprocess.Popen[bytes], psutil.Process]],
    redis_url: str,
) -> None:
    worker, comfy = spawn_worker()

    worker.send_signal(sig)

    code = worker.wait(timeout=60)
    assert gone(comfy, timeout_s=30), f"ComfyUI (pid {comfy.pid}) outlived its worker"
    if sig == signal.SIGTERM:
        assert code == 0  # a clean, warm shutdown
        client = redis.Redis.from_url(redis_url)
        assert beat_of(client, worker.pid) is None  # its heartbeat is gone: /ready stops counting it at once
        client.close()


def test_a_comfyui_that_dies_is_restarted(
    spawn_worker: Callable[[], tuple[subprocess.Popen[bytes], psutil.Process]], redis_url: str
) -> None:
    worker, comfy = spawn_worker()
    client = redis.Redis.from_url(redis_url)

    comfy.kill()

    def restarted() -> Beat | None:
        beat = beat_of(client, worker.pid)
        if beat and beat["comfyui_ready"] and beat["comfyui_pid"] != comfy.pid:
            return beat
        return None

    beat = wait_for(
        restarted, timeout_s=WORKER_READY_TIMEOUT_S, what="ComfyUI to be restarted", interval_s=0.5
    )
    assert beat["comfyui_restarts"] == 1
    assert worker.poll() is None
    new_comfy = psutil.Process(int(beat["comfyui_pid"]))  # type: ignore[call-overload]
    assert new_comfy.ppid() == worker.pid
    client.close()
