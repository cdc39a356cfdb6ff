"""`comfyjobs up` whose private Redis cannot start (its port taken): it stops at once, saying why in
Redis's own words, with the queue's exit code; no worker or API was started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from comfyjobs.cli import exit_codes
from tests.conftest import REPO
from tests.support import free_port


def test_up_stops_at_once_when_its_redis_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(EMBEDDED_REDIS_PORT=str(port), MANIFEST_DIR=str(REPO / "manifests"))
        argv = ["up", "--cpu", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]
        done = subprocess.run(
            [sys.executable, "-m", "comfyjobs", *argv],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode == exit_codes.QUEUE, output
    assert (
        f"redis-server did not start on port {port}: Could not create server TCP listening socket" in output
    )
    assert "Address already in use" in output
    assert "restarting" not in output and "worker" not in output
    password = (tmp_path / "data" / "redis" / "password").read_text().strip()
    assert password and password not in output
