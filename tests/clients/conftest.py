"""The clients against a real API (uvicorn + Redis) with no worker: jobs stay queued, which is what the
error and timeout cases need. The live service with ComfyUI is in tests/integration/test_clients.py."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from tests.api.conftest import live_api, settings  # noqa: F401 - fixtures, re-used
from tests.api.test_availability import beats  # noqa: F401 - fixture, re-used
from tests.conftest import REPO


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
