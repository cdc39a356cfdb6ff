"""Runs several child processes in the foreground and stops them in a chosen order.

Used by `comfyjobs up` (Redis, workers, API) and `comfyjobs worker --gpus` (one worker per GPU). Waiting
is event-driven: one thread per child blocks in wait() and wakes the supervisor when its child exits;
SIGINT/SIGTERM wake it the same way.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from comfyjobs import procs

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    stop_timeout_s: float
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self.exited: Child | None = None

    def add(self, name: str, argv: Sequence[str], env: Mapping[str, str], stop_timeout_s: float) -> Child:
        child = Child(name=name, argv=argv, env=env, stop_timeout_s=stop_timeout_s)
        child.proc = procs.spawn(argv, env=env)
        log.info("started %s (pid %d)", name, child.proc.pid)
        threading.Thread(target=self._watch, args=(child,), name=f"watch-{name}", daemon=True).start()
        self.children.append(child)
        return child

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _: FrameType | None) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            self._stop_requested.set()
            self._wake.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def wait(self) -> bool:
        """Blocks until a stop is requested (True) or a child exits on its own (False)."""
        self._wake.wait()
        return self._stop_requested.is_set()

    def stop_all(self, order: Sequence[str] | None = None) -> None:
        """Stops children by name prefix in ``order`` (others last, newest first); waits for each."""
        ordered: list[Child] = []
        for prefix in order or ():
            ordered += [c for c in self.children if c.name.startswith(prefix) and c not in ordered]
        ordered += [c for c in reversed(self.children) if c not in ordered]
        for child in ordered:
            if child.proc is None:
                continue
            code = procs.stop_group(child.proc, child.stop_timeout_s)
            log.info("stopped %s (exit code %s)", child.name, code)

    def _watch(self, child: Child) -> None:
        assert child.proc is not None
        code = child.proc.wait()
        if not self._stop_requested.is_set():
            log.error("%s exited unexpectedly with code %s", child.name, code)
            self.exited = self.exited or child
        self._wake.set()
