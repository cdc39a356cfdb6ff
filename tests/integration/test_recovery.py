"""Lost workers: a worker SIGKILLed mid-job → its job runs again elsewhere and completes once; a job that
keeps losing its worker ends in FAILURE after MAX_ATTEMPTS. Real API, workers, ComfyUI and Redis; the
faults are real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from comfyjobs import keys
from comfyjobs.jobs.delivery import longest_job_s, make_celery, visibility_timeout_s
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings
from tests.conftest import REPO
from tests.integration.conftest import (
    WARMUP_PARAMS,
    WORKER_READY_TIMEOUT_S,
    first_prompt,
    is_warmup,
    service_env,
    start,
    stop,
)
from tests.integration.test_cancel import sampling
from tests.support import JobEvents, free_port, wait_for

MAX_ATTEMPTS = 2


@dataclass
class Pool:
    """An API and its own workers on a private queue, with short leases so lost workers show quickly."""

    url: str
    env: dict[str, str]
    data_dir: Path
    redis: redis.Redis
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_envs: dict[int, dict[str, str]] = field(default_factory=dict)

    def env_of(self, worker: subprocess.Popen[bytes]) -> dict[str, str]:
        return self.worker_envs[worker.pid]

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = dict(self.env, COMFYUI_BASE_PORT=str(free_port()))
        worker = start(["worker", "--cpu"], env, self.data_dir / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        self.worker_envs[worker.pid] = env
        worker_id = f"cpu.{worker.pid}@{socket.gethostname()}"

        def ready() -> bool:
            assert worker.poll() is None, f"worker exited; see {self.data_dir}"
            raw = self.redis.hget(keys.WORKERS, worker_id)
            return bool(raw) and bool(json.loads(raw)["comfyui_ready"])  # type: ignore[arg-type]

        wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what=f"worker {worker_id}", interval_s=0.5)
        return worker


@pytest.fixture
def make_pool(redis_url: str, model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    """Starts an API on a private queue (short leases, fast reconciler), with settings overridden."""
    started: list[tuple[Pool, subprocess.Popen[bytes]]] = []

    def make(**overrides: str) -> Pool:
        port = free_port()
        env = service_env(
            redis_url, tmp_path, model_dir,
            API_PORT=str(port), QUEUE_NAME=f"recovery-{uuid.uuid4().hex[:8]}", JOB_LEASE_S="3",
            RECONCILE_INTERVAL_S="1", WORKER_HEARTBEAT_S="1", MAX_ATTEMPTS=str(MAX_ATTEMPTS),
            **overrides,
        )  # fmt: skip
        api = start(["api"], env, tmp_path / "api.log")
        pool = Pool(
            url=f"http://127.0.0.1:{port}", env=env, data_dir=tmp_path, redis=redis.Redis.from_url(redis_url)
        )
        started.append((pool, api))
        return pool

    yield make
    for pool, api in started:
        for worker in pool.workers:
            stop(worker)
        stop(api)
        pool.redis.close()


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    return make_pool()


def submit(pool: Pool, **params: Any) -> str:
    def answered() -> httpx.Response | None:
        try:
            return httpx.post(f"{pool.url}/generate", json={"workflow_id": "txt2img", "params": params})
        except httpx.TransportError:
            return None  # the API is still starting

    resp = wait_for(answered, timeout_s=60, what="the API")
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


def kill_when_sampling(pool: Pool, events: JobEvents, task_id: str, worker: subprocess.Popen[bytes]) -> None:
    events.wait_until(task_id, sampling, timeout_s=240, what="sampler step")
    os.kill(worker.pid, signal.SIGKILL)  # the worker main process: solo pool, so also the job's process
    worker.wait(30)


def test_a_killed_workers_job_runs_again_and_completes_once(pool: Pool, events: JobEvents) -> None:
    first = pool.start_worker()
    task_id = submit(pool, prompt="a fox", steps=25, width=128, height=128)
    kill_when_sampling(pool, events, task_id, first)

    second = pool.start_worker()  # the lease lapses, the reconciler puts the job back in line

    assert events.wait_terminal(task_id, 300) == "SUCCESS"
    statuses = events.statuses(task_id)
    assert statuses.count("SUCCESS") == 1 and statuses[-1] == "SUCCESS"
    assert statuses.count("STARTED") == 2  # once per worker
    task = httpx.get(f"{pool.url}/tasks/{task_id}").json()
    assert task["attempts"] == 2
    assert task["worker"] == f"cpu.{second.pid}@{socket.gethostname()}"
    assert len(task["outputs"]) == 1
    assert len(list((pool.data_dir / "outputs" / task_id).iterdir())) == 1  # one set of outputs

    # The visibility timeout the running worker uses is the configured one, longer than any job.
    settings = Settings.load(redis_url=pool.env["REDIS_URL"], queue_name=pool.env["QUEUE_NAME"])
    registry = load_registry(REPO / "manifests", REPO / "workflows")
    app = make_celery(settings, registry)
    name = f"cpu.{second.pid}@{socket.gethostname()}"
    conf = app.control.inspect(destination=[name], timeout=10).conf() or {}
    running = conf[name]["broker_transport_options"]["visibility_timeout"]
    assert running == visibility_timeout_s(settings, registry) > longest_job_s(settings, registry)


def test_a_job_that_keeps_losing_its_worker_ends_in_failure(pool: Pool, events: JobEvents) -> None:
    task_id = submit(pool, prompt="a doomed fox", steps=25, width=128, height=128)
    for _ in range(MAX_ATTEMPTS):
        worker = pool.start_worker()
        kill_when_sampling(pool, events, task_id, worker)
        events.changes[task_id].clear()  # from here on: what happens after this kill
        events.wait_until(
            task_id, lambda changes: any(c.get("status") == "PENDING" for c in changes),
            timeout_s=60, what="re-queue after the kill",
        )  # fmt: skip

    survivor = pool.start_worker()
    assert events.wait_terminal(task_id, 120) == "FAILURE"
    task = httpx.get(f"{pool.url}/tasks/{task_id}").json()
    assert task["error"]["type"] == "attempts_exhausted"
    assert f"gave up after {MAX_ATTEMPTS} attempts" in task["error"]["message"]
    assert survivor.poll() is None  # and the worker that refused it goes on serving
    after = submit(pool, prompt="a fine fox", steps=2, width=64, height=64)
    assert events.wait_terminal(after, 120) == "SUCCESS"


def comfyui_processes(worker: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(worker.pid).children(recursive=True) if "main.py" in " ".join(p.cmdline())
    ]


def test_sigterm_lets_the_running_job_finish_then_stops_cleanly(pool: Pool, events: JobEvents) -> None:
    worker = pool.start_worker()
    comfyui = comfyui_processes(worker)
    assert comfyui
    task_id = submit(pool, prompt="a calm fox", steps=12, width=128, height=128)
    events.wait_until(task_id, sampling, timeout_s=240, what="sampler step")

    worker.send_signal(signal.SIGTERM)

    assert events.wait_terminal(task_id, 240) == "SUCCESS"  # finished, not dropped
    assert worker.wait(120) == 0
    _, alive = psutil.wait_procs(comfyui, timeout=30)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


def test_an_overrunning_job_times_out_and_comfyui_is_interrupted(
    make_pool: Callable[..., Pool], events: JobEvents
) -> None:
    pool = make_pool(JOB_TIME_LIMIT_S="4")
    worker = pool.start_worker()
    task_id = submit(pool, prompt="a slow fox", steps=150, width=256, height=256)

    assert events.wait_terminal(task_id, 240) == "FAILURE"
    task = httpx.get(f"{pool.url}/tasks/{task_id}").json()
    assert task["error"]["type"] == "job_timeout"
    assert task["error"]["message"] == "timed out after 4 s"
    comfy = f"http://127.0.0.1:{pool.env_of(worker)['COMFYUI_BASE_PORT']}"

    def interrupted() -> dict[str, Any] | None:
        # ComfyUI stops at its next sampler step, then writes the history: after the job's end, which
        # comes when the interrupt is sent.
        history = httpx.get(f"{comfy}/history", timeout=30).json()
        return dict(history) or None

    (entry,) = wait_for(
        interrupted, timeout_s=120, what="ComfyUI's history of the interrupted prompt"
    ).values()
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    # The worker goes on: the next (short) job runs.
    after = submit(pool, prompt="a quick fox", steps=1, width=64, height=64)
    assert events.wait_terminal(after, 120) == "SUCCESS"


def test_comfyui_killed_or_hung_mid_job_is_restarted_and_the_job_retried(
    make_pool: Callable[..., Pool], events: JobEvents
) -> None:
    pool = make_pool(
        COMFYUI_HANG_TIMEOUT_S="5", WARMUP_WORKFLOW="tiny", WARMUP_PARAMS=json.dumps(WARMUP_PARAMS)
    )
    worker = pool.start_worker()

    crashed = submit(pool, prompt="a fox", steps=25, width=128, height=128)
    events.wait_until(crashed, sampling, timeout_s=240, what="sampler step")
    (comfyui,) = comfyui_processes(worker)
    comfyui.kill()
    assert events.wait_terminal(crashed, 300) == "SUCCESS", httpx.get(f"{pool.url}/tasks/{crashed}").json()

    hung = submit(pool, prompt="a frozen fox", steps=25, width=128, height=128)
    events.wait_until(hung, sampling, timeout_s=240, what="sampler step")
    (comfyui,) = comfyui_processes(worker)
    comfyui.suspend()  # SIGSTOP: still there, answering nothing
    assert events.wait_terminal(hung, 300) == "SUCCESS", httpx.get(f"{pool.url}/tasks/{hung}").json()
    comfyui.wait(30)  # the worker killed the silent one (and started another)

    for task_id, cause in ((crashed, "comfyui_unavailable"), (hung, "comfyui_hung")):
        task = httpx.get(f"{pool.url}/tasks/{task_id}").json()
        assert (task["attempts"], task["error"], len(task["outputs"])) == (2, None, 1)
        causes = [c["error"]["type"] for c in events.changes[task_id] if c.get("error")]
        assert causes == [cause]  # recorded when it went back in line
        assert events.statuses(task_id).count("STARTED") == 2
    assert worker.poll() is None
    # Each restarted ComfyUI was warmed up before it got a job: the one running now, too.
    assert is_warmup(first_prompt(f"http://127.0.0.1:{pool.env_of(worker)['COMFYUI_BASE_PORT']}"))
