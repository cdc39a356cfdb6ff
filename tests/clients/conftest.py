"""The clients against a real API (uvicorn + Redis) with no worker: jobs stay queued, which is what the
error and timeout cases need. The live service with ComfyUI is in tests/integration/test_clients.py."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
import uvicorn

from comfyjobs.api.app import create_app
from comfyjobs.jobs.store import JobStore
from comfyjobs.settings import Settings
from tests.api.conftest import LiveApi, live_api, settings  # noqa: F401 - fixtures, re-used
from tests.api.test_availability import beats  # noqa: F401 - fixture, re-used
from tests.conftest import REPO
from tests.support import free_port, wait_for


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_client(script: str, *args: str, timeout_s: float = 120) -> Result:
    """Runs a client as a user would, without a terminal (stdin closed)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_client(script: str, *args: str) -> subprocess.Popen[str]:
    """A client left running (to move its job along meanwhile); stderr line-buffered as text."""
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        cwd=REPO,
    )


@contextmanager
def serve(base: Settings, redis_client: redis.Redis, public_host: str = "127.0.0.1") -> Iterator[LiveApi]:
    """Like the `live_api` fixture, but the API's links (PUBLIC_URL) point at this very server, so the
    clients can download what it serves; ``public_host`` may name it differently ("localhost")."""
    port = free_port()
    served = base.model_copy(update={"sse_heartbeat_s": 0.2, "public_url": f"http://{public_host}:{port}"})
    config = uvicorn.Config(
        create_app(served), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=30, what="uvicorn to start")
        store = JobStore(redis_client, served.job_ttl_s, served.queue_name)
        yield LiveApi(url=f"http://127.0.0.1:{port}", settings=served, store=store)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
