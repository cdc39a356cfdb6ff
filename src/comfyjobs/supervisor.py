"""Runs several child processes in the foreground, restarts the ones that exit, stops them in order.

Used by `comfyjobs up` (Redis, workers, API) and `comfyjobs worker --gpus` (one worker per GPU). Waiting
is event-driven: one thread per child blocks in wait(). A child that exits on its own has what is left of
its process group killed and is restarted after its own back-off (``comfyjobs.backoff.Backoff``); the
other children are not touched. Only a child whose back-off gives up (one that nothing works without,
see cli/up.py) wakes the supervisor, which then stops everything. SIGINT/SIGTERM/SIGHUP wake it the
same way.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from comfyjobs import procs
from comfyjobs.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    stop_timeout_s: float
    backoff: Backoff = field(default_factory=Backoff)
    # Why the rest is useless without this child: said when its back-off gives up.
    needed_because: str = ""
    # The child's own account of its last exit (e.g. Redis's last log line), for the give-up message.
    last_words: Callable[[], str] | None = field(default=None, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    gave_up_because: str = ""


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._lock = threading.Lock()  # a restart and stop_all never race over a child's process
        self.exited: Child | None = None  # the child given up on, if any

    def add(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        stop_timeout_s: float,
        backoff: Backoff | None = None,
        needed_because: str = "",
    ) -> Child:
        return self.add_process(
            name, lambda: procs.spawn(argv, env=env), stop_timeout_s, backoff, needed_because
        )

    def add_process(
        self,
        name: str,
        spawn: Callable[[], subprocess.Popen[bytes]],
        stop_timeout_s: float,
        backoff: Backoff | None = None,
        needed_because: str = "",
        last_words: Callable[[], str] | None = None,
        started: subprocess.Popen[bytes] | None = None,
    ) -> Child:
        """Starts a child (from this thread: PR_SET_PDEATHSIG is per spawning thread), or watches
        ``started``, one the caller has started (with ``spawn``) and seen come up. ``backoff`` decides its
        restarts (default: for ever); one that gives up stops everything, saying ``needed_because``."""
        child = Child(
            name=name,
            spawn=spawn,
            stop_timeout_s=stop_timeout_s,
            backoff=backoff or Backoff(),
            needed_because=needed_because,
            last_words=last_words,
        )
        child.proc = started or spawn()
        child.backoff.started()
        log.info("%s %s (pid %d)", "watching" if started else "started", name, child.proc.pid)
        self.children.append(child)
        threading.Thread(target=self._watch, args=(child,), name=f"watch-{name}", daemon=True).start()
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
        """Blocks until a stop is requested (True) or a child was given up on (False, see ``exited``)."""
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
        """Runs for as long as the child may be restarted, and spawns its restarts: this thread outlives
        every process it starts."""
        proc = child.proc
        why = ""
        while True:
            if proc is not None:
                code = proc.wait()
                if self._stop_requested.is_set():
                    break
                with self._lock:
                    if self._stop_requested.is_set():
                        break
                    # Whatever it started and left behind (its group) goes with it, before a restart.
                    procs.stop_group(proc, child.stop_timeout_s, signal.SIGKILL)
                    child.proc = None
                why = describe_exit(code)
            delay_s = child.backoff.next_delay()
            if delay_s is None:
                self._give_up(child, why, exited=proc is not None)
                break
            log.error("%s %s; restarting it in %g s", child.name, why, delay_s)
            if self._stop_requested.wait(delay_s):
                break
            with self._lock:
                if self._stop_requested.is_set():
                    break
                try:
                    proc = child.spawn()
                except Exception as exc:  # e.g. its data dir unwritable: a failed start, backed off too
                    proc = None
                    why = f"could not be started ({type(exc).__name__}: {exc})"
                    continue
                child.proc = proc
                child.backoff.started()
            log.info("restarted %s (pid %d)", child.name, proc.pid)

    def _give_up(self, child: Child, why: str, *, exited: bool) -> None:
        words = ""
        if exited and child.last_words is not None:  # its words are about its last run
            try:
                words = child.last_words().rstrip(".")
            except Exception as exc:  # the message must still come out
                words = f"(its output could not be read: {exc})"
        backoff = child.backoff
        child.gave_up_because = (
            f"it failed {backoff.failures} times in a row, each within {backoff.stable_s:g} s of its start; "
            f"last it {why}" + (f": {words}" if words else "")
        )
        log.error(
            "giving up on %s: %s. %sStopping everything.",
            child.name,
            child.gave_up_because,
            f"{child.needed_because}. " if child.needed_because else "",
        )
        self.exited = self.exited or child
        self._wake.set()
