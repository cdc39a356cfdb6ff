"""`comfyjobs up`: a private Redis, a CPU worker and the API from one command; SIGINT stops all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.conftest import REPO
from tests.integration.conftest import COMFYUI_DIR, WORKER_READY_TIMEOUT_S
from tests.support import JobEvents, free_port, wait_for


def test_up_serves_and_stops_cleanly(model_dir: Path, tmp_path: Path) -> None:
    redis_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        EMBEDDED_REDIS_PORT=str(redis_port),
        COMFYUI_BASE_PORT=str(free_port()),
        MODEL_DIR=str(model_dir),
        COMFYUI_DIR=str(COMFYUI_DIR),
        MANIFEST_DIR=str(REPO / "manifests"),
        WORKFLOW_DIR=str(REPO / "workflows"),
    )
    data_dir = tmp_path / "data"
    log = (tmp_path / "up.log").open("wb")
    argv = ["up", "--cpu", "--port", str(api_port), "--data-dir", str(data_dir)]
    up = subprocess.Popen(
        [sys.executable, "-m", "comfyjobs", *argv], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
    try:

        def ready() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                return api.get("/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what="`comfyjobs up` to be ready", interval_s=0.5)
        children = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "worker --cpu" in names and "main.py" in names and " api " in names

        events = JobEvents(f"redis://127.0.0.1:{redis_port}/0")
        task_id = api.post("/generate", json={"workflow_id": "tiny", "params": {"color": 5}}).json()[
            "task_id"
        ]
        assert events.wait_terminal(task_id, 120) == "SUCCESS"
        events.close()
        task = api.get(f"/tasks/{task_id}").json()
        assert task["outputs"][0]["url"].startswith(f"http://127.0.0.1:{api_port}/outputs/{task_id}/")
        assert api.get(task["outputs"][0]["url"]).status_code == 200

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        assert any((data_dir / "redis").iterdir())  # the append-only file of the private Redis
    finally:
        api.close()
        if up.poll() is None:
            up.kill()
            up.wait(30)
        log.close()
