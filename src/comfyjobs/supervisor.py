"""Runs several child processes in the foreground and stops them in a chosen order.

Used by `comfyjobs up` (Redis, workers, API) and `comfyjobs worker --gpus` (one worker per GPU). Waiting
is event-driven: one thread per child blocks in wait(); a child that exits on its own is restarted (with
back-off), and one that keeps dying wakes the supervisor, which then stops everything. SIGINT/SIGTERM
wake it the same way.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from comfyjobs import procs

log = logging.getLogger(__name__)


RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
MAX_RESTARTS = 5  # within RESTART_WINDOW_S; beyond, the child is broken, not unlucky: stop everything
RESTART_WINDOW_S = 120.0


@dataclass
class Child:
    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    stop_timeout_s: float
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    restarted_at: list[float] = field(default_factory=list, repr=False)


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._lock = threading.Lock()  # a restart and stop_all never race over a child's process
        self.exited: Child | None = None

    def add(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        stop_timeout_s: float,
        restart: bool = True,
    ) -> Child:
        return self.add_process(name, lambda: procs.spawn(argv, env=env), stop_timeout_s, restart)

    def add_process(
        self,
        name: str,
        spawn: Callable[[], subprocess.Popen[bytes]],
        stop_timeout_s: float,
        restart: bool = True,
    ) -> Child:
        child = Child(name=name, spawn=spawn, stop_timeout_s=stop_timeout_s, restart=restart)
        child.proc = spawn()
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
        """Blocks until a stop is requested (True) or a child dies too often to restart (False)."""
        self._wake.wait()
        return self._stop_requested.is_set()

    def stop_all(self, order: Sequence[str] = ()) -> None:
        """Stops children in stages, one stage per name prefix in ``order`` (the rest last). Within a
        stage all are signalled at once and then waited for, so N workers finishing their jobs take as
        long as the slowest, not the sum."""
        with self._lock:
            self._stop_requested.set()  # exits from here on are ours, not crashes: no restarts
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
        while True:
            assert child.proc is not None
            code = child.proc.wait()
            if self._stop_requested.is_set():
                break
            now = time.monotonic()
            child.restarted_at = [t for t in child.restarted_at if now - t < RESTART_WINDOW_S]
            if not child.restart or len(child.restarted_at) >= MAX_RESTARTS:
                log.error("%s exited with code %s and is not restarted again; stopping", child.name, code)
                self.exited = self.exited or child
                break
            delay_s = RESTART_BACKOFF_S[min(len(child.restarted_at), len(RESTART_BACKOFF_S) - 1)]
            log.error("%s exited unexpectedly with code %s; restarting in %.0f s", child.name, code, delay_s)
            if self._stop_requested.wait(delay_s):
                break
            with self._lock:
                if self._stop_requested.is_set():
                    break
                child.restarted_at.append(now)
                try:
                    child.proc = child.spawn()
                except Exception:
                    log.exception("could not restart %s", child.name)
                    self.exited = self.exited or child
                    break
            log.info("restarted %s (pid %d)", child.name, child.proc.pid)
        self._wake.set()
