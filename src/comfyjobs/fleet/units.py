"""The fleet's units where systemd does not run (a container; the test suite's sshd "hosts"): the same
unit files, run by this small supervisor instead of systemd. It reads what a comfyjobs unit uses —
``ExecStart``, ``WorkingDirectory``, ``EnvironmentFile``, ``Environment``, ``Restart``, ``RestartSec``,
``KillSignal``, ``TimeoutStopSec``, ``%i`` of a template — and leaves the rest (sandboxing, ``User=``,
state directories) to systemd. Output goes to a journal-like log, one line per line with its time::

    python -m comfyjobs.fleet.units --dir UNITS_DIR start|stop|restart|is-active|status NAME...

Stopping is systemd's ``KillMode=mixed``: the unit's kill signal to its main process, the whole process
group killed after ``TimeoutStopSec``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dotenv import dotenv_values

RUN_DIR = ".run"  # under the units folder: <unit>.pid (the supervisor), <unit>.json, <unit>.log
START_TIMEOUT_S = 30.0
EXEC_FAILED = 203  # (systemd's exit status when ExecStart cannot be run)


class UnitError(Exception):
    """A unit that cannot be read or run (its file, its command)."""


@dataclass(frozen=True)
class Unit:
    name: str  # e.g. comfyjobs-worker@0.service
    exec_start: list[str]
    working_directory: Path | None
    environment: dict[str, str]
    restart: str  # no, always, on-failure
    restart_s: float
    kill_signal: signal.Signals
    stop_timeout_s: float


def _service_lines(text: str) -> list[tuple[str, str]]:
    """The ``[Service]`` section's settings, in order (a key may repeat, as Environment= does)."""
    section, found = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def unit_file(units_dir: Path, name: str) -> tuple[Path, str | None]:
    """The file of ``name`` (``x@i.service`` comes from ``x@.service``) and its instance."""
    if not name.endswith(".service"):
        name += ".service"
    stem = name.removesuffix(".service")
    if "@" in stem:
        prefix, instance = stem.split("@", 1)
        return units_dir / f"{prefix}@.service", instance
    return units_dir / name, None


def read_unit(units_dir: Path, name: str) -> Unit:
    path, instance = unit_file(units_dir, name)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UnitError(f"unit {name}: cannot read {path}: {exc.strerror}") from None
    if instance is not None:
        text = text.replace("%i", instance)
    settings = _service_lines(text)
    values = dict(settings)
    environment: dict[str, str] = {}
    for key, value in settings:
        if key == "EnvironmentFile":
            optional = value.startswith("-")
            env_path = Path(value.lstrip("-"))
            if not env_path.is_file():
                if optional:
                    continue
                raise UnitError(f"unit {name}: EnvironmentFile {env_path} does not exist")
            environment |= {k: v for k, v in dotenv_values(env_path).items() if v is not None}
        elif key == "Environment":
            for item in shlex.split(value):
                k, _, v = item.partition("=")
                environment[k] = v
    if "ExecStart" not in values:
        raise UnitError(f"unit {name}: no ExecStart= in {path}")
    kill = values.get("KillSignal", "SIGTERM")
    try:
        kill_signal = signal.Signals[kill if kill.startswith("SIG") else f"SIG{kill}"]
    except KeyError:
        raise UnitError(f"unit {name}: unknown KillSignal={kill}") from None
    full = name if name.endswith(".service") else f"{name}.service"
    return Unit(
        name=full,
        exec_start=shlex.split(values["ExecStart"].lstrip("-@+!")),
        working_directory=Path(values["WorkingDirectory"]) if "WorkingDirectory" in values else None,
        environment=environment,
        restart=values.get("Restart", "no"),
        restart_s=float(values.get("RestartSec", "0.1").removesuffix("s")),
        kill_signal=kill_signal,
        stop_timeout_s=float(values.get("TimeoutStopSec", "90").removesuffix("s")),
    )


class Units:
    """The units of one folder, and their supervisors' state (``.run/``)."""

    def __init__(self, units_dir: Path) -> None:
        self.dir = units_dir
        self.run_dir = units_dir / RUN_DIR

    def _path(self, name: str, suffix: str) -> Path:
        full = name if name.endswith(".service") else f"{name}.service"
        return self.run_dir / f"{full}.{suffix}"

    def log_path(self, name: str) -> Path:
        return self._path(name, "log")

    def supervisor_pid(self, name: str) -> int | None:
        try:
            pid = int(self._path(name, "pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def is_active(self, name: str) -> bool:
        return self.supervisor_pid(name) is not None

    def status(self, name: str) -> dict[str, object]:
        state: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(self._path(name, "json").read_text())
        active = self.is_active(name)
        return {"unit": name, "active": "active" if active else "inactive", **(state if active else {})}

    def start(self, name: str) -> bool:
        """Starts ``name`` unless it runs; True when it was started. Returns once its process runs."""
        read_unit(self.dir, name)  # (a broken unit fails here, not in the detached supervisor)
        if self.is_active(name):
            return False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._path(name, "json").unlink(missing_ok=True)
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "comfyjobs.fleet.units", "--dir", str(self.dir), "_supervise", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path(name).open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._path(name, "json").exists():  # written once its command runs
            if supervisor.poll() is not None:
                last = self.log_path(name).read_text(errors="replace").strip().splitlines()[-1:]
                said = f": {last[0].split(': ', 1)[-1]}" if last else ""
                raise UnitError(f"unit {name} did not start{said} (log: {self.log_path(name)})")
            if time.monotonic() > deadline:
                raise UnitError(f"unit {name} did not start within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)  # (a detached process: nothing to wait on but its file)
        return True

    def stop(self, name: str) -> bool:
        """Stops ``name`` as systemd would (KillMode=mixed); True when it ran. Returns once it is gone."""
        pid = self.supervisor_pid(name)
        if pid is None:
            return False
        unit = read_unit(self.dir, name)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + unit.stop_timeout_s + 10
        while self.supervisor_pid(name) == pid and time.monotonic() < deadline:
            time.sleep(0.1)  # (not our child: polled)
        return True

    def supervise(self, name: str) -> int:
        """Runs the unit in this (detached) process until a SIGTERM, restarting it as it says."""
        unit = read_unit(self.dir, name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._path(name, "pid").write_text(str(os.getpid()))
        stopping = threading.Event()
        current: list[subprocess.Popen[bytes]] = []

        def on_term(_signum: int, _frame: object) -> None:
            stopping.set()
            if current and current[0].poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(current[0].pid, unit.kill_signal)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        rc = 0
        try:
            with self.log_path(name).open("ab", buffering=0) as log:
                while not stopping.is_set():
                    rc = self._run_once(unit, log, current, stopping)
                    if (
                        stopping.is_set()
                        or unit.restart == "no"
                        or (unit.restart == "on-failure" and rc == 0)
                    ):
                        break
                    _journal(log, unit.name, f"exited with {rc}; restarting in {unit.restart_s:g} s")
                    stopping.wait(unit.restart_s)
        finally:
            self._path(name, "pid").unlink(missing_ok=True)
            self._path(name, "json").unlink(missing_ok=True)
        return rc

    def _run_once(
        self, unit: Unit, log: object, current: list[subprocess.Popen[bytes]], stopping: threading.Event
    ) -> int:
        env = {**os.environ, **unit.environment}
        try:
            proc = subprocess.Popen(
                unit.exec_start,
                cwd=unit.working_directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # systemd's status=203/EXEC; not restarted (it would fail the same way)
            _journal(log, unit.name, f"cannot run {unit.exec_start[0]}: {exc.strerror}")
            stopping.set()
            return EXEC_FAILED
        current[:] = [proc]
        state = {"pid": proc.pid, "since": datetime.now(UTC).isoformat(timespec="seconds")}
        self._path(unit.name, "json").write_text(json.dumps(state))
        pump = threading.Thread(target=_pump, args=(proc, log, unit.name), daemon=True)
        pump.start()
        if stopping.is_set():  # (a SIGTERM between the check and the start)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, unit.kill_signal)
        while True:
            try:
                rc = proc.wait(timeout=unit.stop_timeout_s if stopping.is_set() else None)
                break
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind (its ComfyUI), as systemd does
        pump.join(timeout=5)
        return rc


def _journal(log: object, unit: str, text: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    log.write(f"{stamp} {unit}: {text}\n".encode())  # type: ignore[attr-defined]


def _pump(proc: subprocess.Popen[bytes], log: object, unit: str) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        _journal(log, unit, raw.decode(errors="replace").rstrip("\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyjobs.fleet.units", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the folder of the unit files")
    parser.add_argument("action", choices=["start", "stop", "restart", "is-active", "status", "_supervise"])
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    units = Units(args.dir)
    try:
        if args.action == "_supervise":
            return units.supervise(args.names[0])
        for name in args.names:
            if args.action == "start":
                print(f"{name}: {'started' if units.start(name) else 'already running'}")
            elif args.action == "stop":
                print(f"{name}: {'stopped' if units.stop(name) else 'not running'}")
            elif args.action == "restart":
                units.stop(name)
                units.start(name)
                print(f"{name}: restarted")
            elif args.action == "is-active":
                if not units.is_active(name):
                    print("inactive")
                    return 3  # (systemctl's code for an inactive unit)
                print("active")
            else:
                print(json.dumps(units.status(name)))
    except UnitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
