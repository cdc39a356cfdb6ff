"""`comfyjobs up`: a private Redis (with a password), a CPU worker and the API from one command; a child
that dies is restarted alone; SIGINT stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REPO
from tests.integration.conftest import COMFYUI_DIR, WORKER_READY_TIMEOUT_S
from tests.support import JobEvents, free_port, wait_for

API_KILLS = 7  # more than `up` used to take before it stopped everything (5 restarts in 120 s)


@pytest.mark.timeout(600)  # the API's restarts wait RESTART_BACKOFF_MAX_S at most (30 s if unknown)
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
        RESTART_BACKOFF_MAX_S="0.5",
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
        names = " ".join(cmdline for _, cmdline in descendants(up))
        assert "redis-server" in names and "worker --cpu" in names and "main.py" in names and " api " in names

        # The private Redis wants the password `up` made and keeps (0600) in its data dir.
        password_file = data_dir / "redis" / "password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        redis_url = f"redis://:{password}@127.0.0.1:{redis_port}/0"
        with socket.create_connection(("127.0.0.1", redis_port), timeout=10) as sock:
            sock.sendall(b"KEYS *\r\n")
            assert sock.recv(100).startswith(b"-NOAUTH")
        assert all(password not in cmdline for _, cmdline in descendants(up))

        events = JobEvents(redis_url)
        task_id = api.post("/generate", json={"workflow_id": "tiny", "params": {"color": 5}}).json()[
            "task_id"
        ]
        assert events.wait_terminal(task_id, 120) == "SUCCESS"
        events.close()
        task = api.get(f"/tasks/{task_id}").json()
        assert task["outputs"][0]["url"].startswith(f"http://127.0.0.1:{api_port}/outputs/{task_id}/")
        assert api.get(task["outputs"][0]["url"]).status_code == 200

        # Redis killed outright: `up` restarts it, it reloads its append-only file, and the API and the
        # worker reconnect by themselves. (The file is fsynced every second: wait until the job's final
        # write is in it, which is what "accepted work survives" promises.)
        aof = data_dir / "redis" / "appendonly.aof"
        filename = task["outputs"][0]["filename"].encode()
        wait_for(lambda: filename in aof.read_bytes(), timeout_s=30, what="the append-only file")
        kill_child(up, "redis-server")
        wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what="ready again after Redis", interval_s=0.5)
        assert api.get(f"/tasks/{task_id}").json()["status"] == "SUCCESS"  # survived the restart
        run_tiny(api, redis_url)

        # A worker killed outright is restarted too (with a new ComfyUI), and serves.
        kill_child(up, "worker --cpu")
        wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what="a new worker", interval_s=0.5)
        run_tiny(api, redis_url)

        # An API that keeps crashing is restarted as often as it takes, and nothing else is touched:
        # the same Redis, worker and ComfyUI serve the job once it answers again.
        others = {needle: child_pid(up, needle) for needle in ("redis-server", "worker --cpu", "main.py")}
        for _ in range(API_KILLS):
            kill_child(up, " api ")
        wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what="the API again", interval_s=0.5)
        run_tiny(api, redis_url)
        assert {needle: child_pid(up, needle) for needle in others} == others
        output = (tmp_path / "up.log").read_text()
        assert output.count("api was killed by SIGKILL; restarting it") == API_KILLS
        assert password not in output  # `up` logs the URL with the password masked

        children = psutil.Process(up.pid).children(recursive=True)
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


def kill_child(up: subprocess.Popen[bytes], needle: str) -> None:
    """SIGKILLs the child of `up` whose command line has ``needle``, and waits until up has a new one."""
    (victim,) = [c for c, cmdline in descendants(up) if needle in cmdline]
    victim.kill()
    victim.wait(30)

    def replaced() -> bool:
        assert up.poll() is None, "`comfyjobs up` exited instead of restarting its child"
        return any(needle in cmdline and c.pid != victim.pid for c, cmdline in descendants(up))

    wait_for(replaced, timeout_s=60, what=f"a new {needle}")


def child_pid(up: subprocess.Popen[bytes], needle: str) -> int:
    (pid,) = [c.pid for c, cmdline in descendants(up) if needle in cmdline]
    return pid


def descendants(up: subprocess.Popen[bytes]) -> list[tuple[psutil.Process, str]]:
    """`up`'s processes and their command lines, leaving out any that ended while they were listed (a
    short-lived child, or one just killed and not yet reaped: a zombie has no command line)."""
    found = []
    for child in psutil.Process(up.pid).children(recursive=True):
        try:
            found.append((child, " ".join(child.cmdline())))
        except psutil.NoSuchProcess:  # (ZombieProcess is one)
            continue
    return found


def run_tiny(api: httpx.Client, redis_url: str) -> None:
    events = JobEvents(redis_url)
    try:
        task_id = api.post("/generate", json={"workflow_id": "tiny", "params": {"color": 9}}).json()[
            "task_id"
        ]
        assert events.wait_terminal(task_id, 120) == "SUCCESS"
    finally:
        events.close()
