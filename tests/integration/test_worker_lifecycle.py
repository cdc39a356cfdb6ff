"""A worker never leaves its ComfyUI behind: not when stopped, not when killed."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest
import redis

from comfyjobs import keys
from tests.integration.conftest import WORKER_READY_TIMEOUT_S, service_env, start
from tests.support import wait_for


def start_worker(redis_url: str, model_dir: Path, data_dir: Path) -> tuple[psutil.Process, psutil.Process]:
    env = service_env(redis_url, data_dir, model_dir, QUEUE_NAME="lifecycle-test")
    worker = start(["worker", "--cpu"], env, data_dir / "worker.log")
    client = redis.Redis.from_url(redis_url)

    def comfyui_pid() -> int | None:
        assert worker.poll() is None, (data_dir / "worker.log").read_text()[-3000:]
        for key in client.scan_iter(match=keys.worker("*")):
            beat = json.loads(client.get(key) or b"{}")
            if beat.get("pid") == worker.pid and beat.get("comfyui_ready"):
                return int(beat["comfyui_pid"])
        return None

    pid = wait_for(comfyui_pid, timeout_s=WORKER_READY_TIMEOUT_S, what="the worker's ComfyUI", interval_s=0.5)
    client.close()
    comfy = psutil.Process(pid)
    assert "main.py" in comfy.cmdline()
    return psutil.Process(worker.pid), comfy


def gone(proc: psutil.Process, timeout_s: float) -> bool:
    _, alive = psutil.wait_procs([proc], timeout=timeout_s)
    return not alive or alive[0].status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_comfyui_outlives_its_worker(
    sig: signal.Signals, redis_url: str, model_dir: Path, tmp_path: Path
) -> None:
    worker, comfy = start_worker(redis_url, model_dir, tmp_path)

    worker.send_signal(sig)

    exited, alive = psutil.wait_procs([worker], timeout=60)
    assert not alive, "the worker did not exit"
    assert gone(comfy, timeout_s=30), f"ComfyUI (pid {comfy.pid}) outlived its worker"
    if sig == signal.SIGTERM:
        assert exited[0].returncode == 0  # a clean, warm shutdown
        # It also removed its heartbeat, so /ready stops counting it at once.
        client = redis.Redis.from_url(redis_url)
        beats = [json.loads(client.get(k) or b"{}") for k in client.scan_iter(match=keys.worker("*"))]
        assert worker.pid not in [b.get("pid") for b in beats]
        client.close()
