"""Child processes that cannot outlive their parent, and stopping a whole process group.

Every long-running child (ComfyUI, workers, the API, redis-server under `up`) is started here: in its own
session, so stopping it reaches everything it started, and with PR_SET_PDEATHSIG so the kernel kills it if
its parent dies without a chance to clean up (SIGKILL, OOM).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1

_libc: Any = None
if sys.platform.startswith("linux"):
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with(parent_pid: int) -> Callable[[], None]:
    def in_child() -> None:  # runs between fork and exec: C calls only, no locks
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return in_child


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    stdin_bytes: bytes | None = None,
) -> subprocess.Popen[bytes]:
    """Starts ``argv`` as the leader of a new process group, killed by the kernel if we die.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so spawn only from threads that live as
    long as the child should (the main thread, or a supervisor thread that outlives its children).

    ``stdin_bytes``: written to the child's stdin, which is then closed (else stdin is /dev/null). For a
    secret the child reads at start (a config), since its command line is readable by every user. At
    most 4 KiB (a pipe holds at least one page), so the write never waits for the child.
    """
    if stdin_bytes is not None and len(stdin_bytes) > 4096:
        raise ValueError("stdin_bytes: at most 4 KiB")
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL if stdin_bytes is None else subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),
    )
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):  # it died at once: its exit says why, not this
            proc.stdin.write(stdin_bytes or b"")
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return proc


def signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen[Any], timeout_s: float, sig: int = signal.SIGTERM) -> int | None:
    """Sends ``sig`` to the child's whole group, waits up to ``timeout_s``, then SIGKILLs the group.

    Returns the child's exit code (None if it was already reaped elsewhere).
    """
    if proc.poll() is None:
        signal_group(proc, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    # The leader may be gone while something it started lingers in the group: kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    return proc.returncode
