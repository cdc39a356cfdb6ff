"""``fleet logs [--since 10m] [--grep TEXT]``: the journal of every comfyjobs unit on the chosen hosts
(systemd's journal, or the fallback's unit logs), merged in time order with the host in front."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from comfyjobs.errors import FleetError
from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote
from comfyjobs.fleet.services import HostServices

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LINE = re.compile(r"^(\S+) (\S+?): (.*)$")


def since_s(text: str) -> int:
    """``10m`` -> 600 (s, m, h, d; a bare number is seconds); FleetError naming the option when bad."""
    found = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not found or int(found.group(1)) == 0:
        raise FleetError(f"--since {text!r}: give a duration such as 90s, 10m, 2h or 1d")
    return int(found.group(1)) * _UNITS_S[found.group(2) or "s"]


@dataclass(frozen=True, order=True)
class LogLine:
    at: datetime
    host: str
    unit: str
    text: str

    def __str__(self) -> str:
        stamp = self.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return f"{stamp} {self.host} {self.unit.removesuffix('.service')}: {self.text}"


def host_lines(remote: PyinfraRemote, host: FleetHost, since: int, grep: str | None) -> list[LogLine]:
    """The host's unit log lines of the last ``since`` seconds (by the host's clock), matching ``grep``
    (case-insensitive) when given."""
    services = HostServices(remote, host)
    ran = remote.run(services.journal_command(since), step="logs")
    cutoff = datetime.now(UTC) - timedelta(seconds=since)
    needle = grep.lower() if grep else None
    found: list[LogLine] = []
    for raw in ran.output.splitlines():
        match = _LINE.match(raw)
        if match is None:
            continue
        try:
            at = datetime.fromisoformat(match.group(1))
        except ValueError:
            continue
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if at < cutoff or (needle is not None and needle not in match.group(3).lower()):
            continue
        found.append(LogLine(at, host.name, match.group(2), match.group(3)))
    return found


def merged(lines_by_host: dict[str, list[LogLine]]) -> list[LogLine]:
    return sorted(line for lines in lines_by_host.values() for line in lines)
