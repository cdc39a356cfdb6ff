"""A real service for the integration tests: Redis, one CPU worker with its own ComfyUI, and the API,
each a separate process started the way `comfyjobs up` starts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from comfyjobs.catalog.bundle import read_bundle
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.comfy.smoke_model import write_smoke_checkpoint
from comfyjobs.comfy.smoke_upscaler import write_smoke_upscaler
from tests.conftest import REPO, run_redis
from tests.support import JobEvents, free_port, wait_for

COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / "ComfyUI"))
WORKER_READY_TIMEOUT_S = 240.0


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The integration tests' own Redis: the service's worker keeps its heartbeat there (and its queue),
    which the other tests, that expect no worker, must not see, whichever runs first."""
    yield from run_redis(tmp_path_factory)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


WARMUP_PARAMS = {"color": 4242}  # a colour no test uses: the warm-up's prompt in ComfyUI's history


def is_warmup(history_entry: dict[str, Any]) -> bool:
    graph = history_entry["prompt"][2]
    return any(n.get("inputs", {}).get("color") == WARMUP_PARAMS["color"] for n in graph.values())


def first_prompt(comfyui_url: str) -> dict[str, Any]:
    """The first prompt the ComfyUI at ``comfyui_url`` ran (by its queue number)."""
    history = httpx.get(f"{comfyui_url}/history", timeout=30).json()
    return dict(min(history.values(), key=lambda entry: entry["prompt"][0]))


@dataclass
class Service:
    url: str
    redis_url: str
    env: dict[str, str]
    data_dir: Path
    model_dir: Path
    worker: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (COMFYUI_DIR / "main.py").is_file():
        pytest.fail(f"ComfyUI is not installed at {COMFYUI_DIR}: run install/install.sh --dev first")
    models = tmp_path_factory.mktemp("models")
    write_smoke_checkpoint(COMFYUI_DIR, models / "checkpoints" / "smoke-sd15.safetensors")
    write_smoke_upscaler(models / "upscale_models" / "smoke-2x.safetensors", scale=2)
    # Exists, so the API accepts it, but is no checkpoint: ComfyUI fails while loading it.
    (models / "checkpoints" / "broken.safetensors").write_bytes(b"\0" * 64)
    return models


def service_env(redis_url: str, data_dir: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATA_DIR=str(data_dir),
        MODEL_DIR=str(model_dir),
        COMFYUI_DIR=str(COMFYUI_DIR),
        MANIFEST_DIR=str(REPO / "manifests"),
        WORKFLOW_DIR=str(REPO / "workflows"),
        COMFYUI_BASE_PORT=str(free_port()),
        LOG_LEVEL="INFO",
        **extra,
    )
    return env


def start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "comfyjobs", *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
    )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout_s)


@contextmanager
def api_process(service: Service, port: int, log_name: str, **env: str) -> Iterator[httpx.Client]:
    """Another API process on the session's Redis and worker (the API is stateless), with ``env`` over
    the session's settings: a client for it once it answers, and the process stopped at the end."""
    proc = start(["api"], service.env | {"API_PORT": str(port), **env}, service.data_dir / log_name)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            def up() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, timeout_s=60, what=f"the API of {log_name}")
            yield client
    finally:
        stop(proc)


def worker_ready(client: httpx.Client) -> bool:
    resp = client.get("/ready")
    return resp.status_code == 200


@pytest.fixture(scope="session")
def service(redis_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("data")
    api_port = free_port()
    # Previews on: the frames are cheap with latent2rgb, and the events tests look for them.
    env = service_env(
        redis_url,
        data_dir,
        model_dir,
        API_PORT=str(api_port),
        COMFYUI_PREVIEW_METHOD="latent2rgb",
        WARMUP_WORKFLOW="tiny",  # before the first job (tests/integration/test_operations.py)
        WARMUP_PARAMS=json.dumps(WARMUP_PARAMS),
        # Long, so that an idle thread is surely still waiting for the next job when a test sends it
        # (tests/integration/test_service.py); a warm shutdown still ends the wait within a second.
        WORKER_LINGER_S="60",
        # Every step's progress is written (not four a second), so a test sees each one whatever the speed.
        PROGRESS_INTERVAL_S="0",
        # Model URLs of the tests' local file server (tests/integration/test_models_on_demand.py).
        MODEL_URL_ALLOWLIST="huggingface.co,civitai.com,127.0.0.1",
    )
    api = start(["api"], env, data_dir / "api.log")
    worker = start(["worker", "--cpu"], env, data_dir / "worker.log")
    url = f"http://127.0.0.1:{api_port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:

            def ready() -> bool:
                if worker.poll() is not None or api.poll() is not None:
                    raise AssertionError(f"a service process exited; logs in {data_dir}")
                try:
                    return worker_ready(client)
                except httpx.TransportError:
                    return False

            wait_for(ready, timeout_s=WORKER_READY_TIMEOUT_S, what="the worker's ComfyUI", interval_s=0.5)
        yield Service(
            url=url, redis_url=redis_url, env=env, data_dir=data_dir, model_dir=model_dir, worker=worker
        )
    finally:
        stop(worker)
        stop(api)
        if os.environ.get("CI"):
            for log in ("worker.log", "api.log"):
                print(f"--- {log} (tail) ---\n" + (data_dir / log).read_text()[-3000:])


@pytest.fixture
def api(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture
def events(service: Service) -> Iterator[JobEvents]:
    watcher = JobEvents(service.redis_url)
    yield watcher
    watcher.close()


@contextmanager
def active_version(
    service: Service, api: httpx.Client, manifests: Path, workflows: Path, shows: str
) -> Iterator[str]:
    """These folders published and activated as a catalog version for the block, until the API serves
    it (its workflow ``shows`` listed), then the version active before back."""
    client = redis.Redis.from_url(service.redis_url)
    store = CatalogStore(client, "comfyjobs")
    before = store.require_active()
    bundle, registry = read_bundle(manifests, workflows)
    version = store.publish(
        bundle, source="test", keep=10, job_ttl_s=3600, workflows=list(registry.workflows)
    )
    store.activate(version.version)

    def served() -> set[str]:
        return {w["id"] for w in api.get("/workflows").json()}

    try:
        wait_for(lambda: shows in served(), timeout_s=10, what="the API to serve the version")
        yield version.version
    finally:
        store.activate(before)
        wait_for(lambda: shows not in served(), timeout_s=10, what="the version before back")
        client.close()
