"""The fallback service manager (comfyjobs.fleet.units): a unit file run as systemd would run it, where
systemd cannot run (the fleet tests' hosts)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyjobs.fleet.units import UnitError, Units
from tests.support import wait_for

SCRIPT = """
import signal, sys, time
print("up", flush=True)
def term(*_):
    print("stopping cleanly", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    time.sleep(60)
"""


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Units]:
    (tmp_path / "svc.py").write_text(SCRIPT)
    (tmp_path / "settings.env").write_text("GREETING=from-file\n")
    (tmp_path / "demo.service").write_text(
        "[Unit]\nDescription=demo\n[Service]\n"
        f"WorkingDirectory={tmp_path}\nEnvironmentFile={tmp_path / 'settings.env'}\n"
        f"ExecStart={sys.executable} -u svc.py\nRestart=always\nRestartSec=0.2\nKillSignal=SIGTERM\n"
        "TimeoutStopSec=20\n"
    )
    (tmp_path / "broken.service").write_text("[Service]\nExecStart=/nowhere/bin/thing --x\n")
    made = Units(tmp_path)
    yield made
    made.stop("demo.service")


def _log(units: Units, name: str) -> str:
    return units.log_path(name).read_text() if units.log_path(name).exists() else ""


def test_a_unit_starts_logs_its_lines_with_time_and_stops_with_its_kill_signal(units: Units) -> None:
    assert units.start("demo.service")
    assert not units.start("demo.service")  # (already running)
    assert units.is_active("demo")
    wait_for(lambda: " demo.service: up" in _log(units, "demo.service"), timeout_s=30, what="its first line")
    pid = units.status("demo.service")["pid"]
    assert isinstance(pid, int)

    assert units.stop("demo.service")

    assert not units.is_active("demo.service")
    assert "demo.service: stopping cleanly" in _log(units, "demo.service")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_unit_that_dies_is_restarted_as_its_file_says(units: Units) -> None:
    units.start("demo.service")
    first = units.status("demo.service")["pid"]
    assert isinstance(first, int)
    os.kill(first, 9)

    def restarted() -> bool:
        pid = units.status("demo.service").get("pid")
        return pid not in (None, first)

    wait_for(restarted, timeout_s=30, what="the restart")
    assert "exited with -9; restarting in 0.2 s" in _log(units, "demo.service")


def test_a_unit_whose_command_cannot_run_says_why(units: Units) -> None:
    with pytest.raises(UnitError, match="did not start: cannot run /nowhere/bin/thing: No such file"):
        units.start("broken.service")
    with pytest.raises(UnitError, match="cannot read"):
        units.start("missing.service")
