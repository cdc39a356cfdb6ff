"""A host's units, started, stopped and asked about through systemd, or where systemd does not run (no
``/run/systemd/system``: a container, the test suite's hosts) through comfyjobs.fleet.units, which runs
the same unit files. Host data ``service_manager`` (auto, systemd, fallback) chooses."""

from __future__ import annotations

import shlex
from typing import Literal

from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote

Kind = Literal["systemd", "fallback"]


class HostServices:
    def __init__(self, remote: PyinfraRemote, host: FleetHost) -> None:
        self._remote = remote
        self._host = host
        self._kind: Kind | None = None if host.service_manager == "auto" else host.service_manager

    @property
    def kind(self) -> Kind:
        if self._kind is None:
            found = self._remote.run(
                "test -d /run/systemd/system && echo systemd || echo fallback", step="units"
            )
            self._kind = "systemd" if found.output.strip() == "systemd" else "fallback"
        return self._kind

    def _units(self, action: str, units: list[str]) -> str:
        names = " ".join(shlex.quote(u) for u in units)
        if self.kind == "systemd":
            return f"systemctl {action} {names}"
        python = shlex.quote(str(self._host.venv / "bin" / "python"))
        folder = shlex.quote(str(self._host.units_dir))
        return f"{python} -m comfyjobs.fleet.units --dir {folder} {action} {names}"

    def reload(self) -> None:
        if self.kind == "systemd":
            self._remote.run("systemctl daemon-reload", step="units")

    def is_active(self, unit: str) -> bool:
        return self._remote.run(self._units("is-active", [unit]), step="units", check=False).ok

    def start(self, unit: str) -> None:
        if self.kind == "systemd":
            self._remote.run(f"systemctl enable --now {shlex.quote(unit)}", step=f"start {unit}")
        else:
            self._remote.run(self._units("start", [unit]), step=f"start {unit}")

    def restart(self, unit: str) -> None:
        self._remote.run(self._units("restart", [unit]), step=f"restart {unit}")

    def stop(self, unit: str) -> None:
        self._remote.run(self._units("stop", [unit]), step=f"stop {unit}")

    def journal_command(self, since_s: int) -> str:
        """A command printing the units' log lines (of about the last ``since_s`` seconds, the caller
        filters by time), each ``<ISO time> <unit>: <text>``."""
        units = self._host.units
        if self.kind == "systemd":
            args = " ".join(f"-u {shlex.quote(u)}" for u in units)
            return (
                f"journalctl {args} --since=-{since_s}s --no-pager -o short-iso-precise"
                " | sed -E 's/^([^ ]+) [^ ]+ ([^[:]+)(\\[[0-9]+\\])?: /\\1 \\2: /'"
            )
        run = self._host.units_dir / ".run"
        logs = " ".join(shlex.quote(str(run / f"{u}.log")) for u in units)
        return f"tail -q -n 20000 {logs} 2>/dev/null || true"
