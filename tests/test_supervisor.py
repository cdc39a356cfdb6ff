"""The restart policy (``Backoff``, on an injected clock) and the supervisor with real processes: a child
that keeps crashing is restarted without touching its siblings; one that nothing works without is given up
on, and everything stops."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from comfyjobs import procs
from comfyjobs.backoff import DEFAULT_DELAYS_S, Backoff, capped
from comfyjobs.supervisor import Supervisor, describe_exit
from tests.support import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_grow_then_stay_at_the_cap() -> None:
    clock = Clock()
    backoff = Backoff((1.0, 2.0, 5.0, 10.0, 30.0), stable_s=60.0, clock=clock)
    delays = []
    for _ in range(8):
        backoff.started()
        clock.now += 3.0  # each run short of stable_s
        delays.append(backoff.next_delay())
    assert delays == [1.0, 2.0, 5.0, 10.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff.failures == 8


def test_a_stable_run_starts_the_delays_again() -> None:
    clock = Clock()
    backoff = Backoff((1.0, 2.0, 5.0), stable_s=60.0, clock=clock)
    for _ in range(3):
        backoff.started()
        clock.now += 1.0
        backoff.next_delay()
    backoff.started()
    clock.now += 59.9  # just short of stable: still the same streak
    assert backoff.next_delay() == 5.0
    backoff.started()
    clock.now += 60.0  # stayed up long enough: it had recovered
    assert backoff.next_delay() == 1.0
    assert backoff.failures == 1
    backoff.started()
    clock.now += 1.0
    assert backoff.next_delay() == 2.0


def test_gives_up_after_that_many_fast_failures_only() -> None:
    clock = Clock()
    backoff = Backoff((1.0, 2.0), stable_s=60.0, give_up_after=3, clock=clock)
    backoff.started()
    assert backoff.next_delay() == 1.0
    # A start that fails outright (no started()) counts as a fast failure.
    assert backoff.next_delay() == 2.0
    backoff.started()
    clock.now += 120.0  # but a long run in between clears the streak
    assert backoff.next_delay() == 1.0
    backoff.started()
    assert backoff.next_delay() == 2.0
    backoff.started()
    assert backoff.next_delay() is None
    assert backoff.failures == 3


def test_never_gives_up_without_a_limit() -> None:
    backoff = Backoff((0.5,), clock=Clock())
    assert all(backoff.next_delay() == 0.5 for _ in range(1000))


def test_reset_and_capped() -> None:
    backoff = Backoff((1.0, 2.0), clock=Clock())
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0
    assert capped(DEFAULT_DELAYS_S, 4.0) == (1.0, 2.0, 4.0, 4.0, 4.0)
    assert capped(DEFAULT_DELAYS_S, 0.1) == (0.1,) * len(DEFAULT_DELAYS_S)
    with pytest.raises(ValueError):
        Backoff(())
    with pytest.raises(ValueError):
        Backoff(give_up_after=0)


def test_describe_exit() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_crashing_child_is_restarted_for_ever_and_its_siblings_are_untouched(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    sup = Supervisor()
    try:
        steady = sup.add("steady", sh("exec sleep 600"), dict(os.environ), 5.0)
        steady_pid = steady.proc.pid if steady.proc else None
        # Far more crashes than any limit there used to be (5 within 120 s stopped everything).
        sup.add("crashy", sh(f"echo start >> {starts}; exit 3"), dict(os.environ), 5.0, Backoff((0.01,)))
        wait_for(lambda: lines(starts) >= 12, timeout_s=60, what="a dozen restarts")
        assert sup.exited is None
        assert steady.proc is not None and steady.proc.pid == steady_pid and steady.proc.poll() is None
    finally:
        sup.stop_all()
    assert steady.proc is not None and steady.proc.returncode is not None


def test_what_a_crashed_child_left_in_its_group_is_killed_before_the_restart(tmp_path: Path) -> None:
    orphan_pid = tmp_path / "orphan"
    sup = Supervisor()
    try:
        # The child starts a grandchild in its group and dies; the back-off is long, so what is checked
        # is the clean-up right after the crash, not the restart.
        sup.add(
            "leaky",
            sh(f"sleep 600 & echo $! > {orphan_pid}.tmp; mv {orphan_pid}.tmp {orphan_pid}; exit 1"),
            dict(os.environ),
            5.0,
            Backoff((600.0,)),
        )
        pid = wait_for(lambda: orphan_pid.exists() and int(orphan_pid.read_text()), timeout_s=30, what="pid")
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
                 timeout_s=30, what="the grandchild to be killed")  # fmt: skip
    finally:
        sup.stop_all()


def test_a_child_nothing_works_without_is_given_up_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = Supervisor()
    try:
        steady = sup.add("steady", sh("exec sleep 600"), dict(os.environ), 5.0)
        sup.add_process(
            "db",
            lambda: procs.spawn(sh("exit 7")),
            5.0,
            Backoff((0.01,), give_up_after=3),
            "Nothing works without the db",
            last_words=lambda: "disk on fire",
        )
        with caplog.at_level(logging.ERROR, logger="comfyjobs.supervisor"):
            assert sup.wait() is False  # woken by the give-up, not by a stop request
        assert sup.exited is not None and sup.exited.name == "db"
        (line,) = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
        assert line.startswith("giving up on db: it failed 3 times in a row")
        assert "exited with code 7: disk on fire" in line and "Nothing works without the db" in line
        assert "Stopping everything" in line
        assert steady.proc is not None and steady.proc.poll() is None  # stopping it is up to the caller
    finally:
        sup.stop_all()
    assert steady.proc is not None and steady.proc.returncode is not None


def test_a_child_that_cannot_even_be_spawned_is_backed_off_and_given_up_on() -> None:
    calls = []

    def spawn() -> subprocess.Popen[bytes]:
        calls.append(1)
        if len(calls) == 1:
            return procs.spawn([sys.executable, "-c", "raise SystemExit(2)"])
        raise OSError(28, "No space left on device")

    sup = Supervisor()
    try:
        sup.add_process("db", spawn, 5.0, Backoff((0.01,), give_up_after=3))
        assert sup.wait() is False
        assert sup.exited is not None
        assert "could not be started (OSError: [Errno 28] No space left on device)" in (
            sup.exited.gave_up_because
        )
        assert len(calls) == 3
    finally:
        sup.stop_all()
