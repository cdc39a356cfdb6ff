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

        # SIGHUP too: a closed terminal should stop everything in order, not kill it all at once.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, request_stop)

    def wait(self) -> bool:
        """Blocks until a stop is requested (True) or a child exits on its own (False)."""
        self._wake.wait()
        return self._stop_requested.is_set()

    def stop_all(self, order: Sequence[str] = ()) -> None:
        """Stops children in stages, one stage per name prefix in ``order`` (the rest last). Within a
        stage all are signalled at once and then waited for, so N workers finishing their jobs take as
        long as the slowest, not the sum."""
        self._stop_requested.set()  # exits from here on are ours, not crashes
        stages: list[list[Child]] = []
        placed: list[Child] = []
        for prefix in order:
            stage = [c for c in self.children if c.name.startswith(prefix) and c not in placed]
            placed += stage
            stages.append(stage)
        stages.append([c for c in self.children if c not in placed])
        for stage in stages:
            running = [(c, c.proc) for c in stage if c.proc is not None]
            for _, proc in running:
                procs.signal_group(proc, signal.SIGTERM)
            for child, proc in running:
                code = procs.stop_group(proc, child.stop_timeout_s)
                log.info("stopped %s (exit code %s)", child.name, code)

    def _watch(self, child: Child) -> None:
        assert child.proc is not None
        code = child.proc.wait()
        if not self._stop_requested.is_set():
            log.error("%s exited unexpectedly with code %s", child.name, code)
            self.exited = self.exited or child
        self._wake.set()
