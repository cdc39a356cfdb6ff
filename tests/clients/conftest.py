"""The clients against a real API (uvicorn + Redis) with no worker: jobs stay queued, which is what the
error and timeout cases need. The live service with ComfyUI is in tests/integration/test_clients.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from tests.api.conftest import LiveApi, live_api, settings  # noqa: F401 - fixtures, re-used
from tests.api.test_availability import beats  # noqa: F401 - fixture, re-used
from tests.conftest import REPO
from tests.support import free_port, served, worker_store


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
    linked = base.model_copy(update={"sse_heartbeat_s": 0.2, "public_url": f"http://{public_host}:{port}"})
    with served(create_app(linked), port) as url:
        yield LiveApi(url=url, settings=linked, store=worker_store(redis_client, linked))
