"""``fleet status``: each host asked over SSH (comfyjobs.fleet.probe, run there), then one table for the
fleet — per host: reachable, its units and their state, its workers (state, jobs, current job), GPUs,
ComfyUI version, disk free, model cache, the catalog version its workers run — and the queue by
priority. Everything wrong is listed under the table (red on a terminal); the verb fails then."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote
from comfyjobs.fleet.services import HostServices

MIN_DISK_FREE_GB = 10.0  # what install/install.sh asks for


def probe_host(
    remote: PyinfraRemote, host: FleetHost, with_fleet: bool, services: HostServices | None = None
) -> dict[str, Any]:
    """The host's report (comfyjobs.fleet.probe's JSON), or ``{"error": ...}`` saying why there is none.
    ``services``: the host's, when the caller polls (its kind is then looked up once)."""
    services = services or HostServices(remote, host)
    python = shlex.quote(str(host.venv / "bin" / "python"))
    command = (
        f"cd {shlex.quote(str(host.install_root))} && {python} -m comfyjobs.fleet.probe"
        f" --manager {services.kind} --units-dir {shlex.quote(str(host.units_dir))}"
        f"{' --fleet' if with_fleet else ''} {' '.join(shlex.quote(u) for u in host.units)}"
    )
    ran = remote.run(command, step="status", check=False)
    lines = ran.output.strip().splitlines()
    last = lines[-1] if lines else ""
    if ran.ok and last.startswith("{"):
        try:
            report: dict[str, Any] = json.loads(last)
            return report
        except ValueError:
            pass
    return {"error": f"not installed, or the probe failed: {last[-200:] or 'no output'}"}


@dataclass
class FleetView:
    """The table's content, and what is wrong (one line each, host first)."""

    rows: list[list[Text]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    queue: str = ""


def _ok(text: str) -> Text:
    return Text(text)


def _bad(text: str) -> Text:
    return Text(text, style="bold red")


def _units_cell(host: FleetHost, report: dict[str, Any], view: FleetView) -> Text:
    cell = Text()
    for name in host.units:
        state = report.get("units", {}).get(name, {}).get("state", "unknown")
        short = name.removeprefix("comfyjobs-").removesuffix(".service")
        good = state == "active"
        if not good:
            view.problems.append(f"{host.name}: unit {name} is {state}")
        cell.append(f"{short} {state}\n", style=None if good else "bold red")
    cell.rstrip()
    return cell


def beat_of(report: dict[str, Any], unit: str, beats: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The heartbeat of the worker that ``unit`` runs on the host of ``report`` (its main pid)."""
    pid = report.get("units", {}).get(unit, {}).get("pid")
    return next((b for b in beats if pid is not None and b.get("pid") == pid), None)


def _workers_cell(
    host: FleetHost, report: dict[str, Any], beats: list[dict[str, Any]] | None, view: FleetView
) -> Text:
    cell = Text()
    for name in host.workers:
        if beats is None:
            cell.append(
                f"{name.split('@')[-1].removesuffix('.service')}: ? (no fleet state)\n", style="yellow"
            )
            continue
        beat = beat_of(report, name, beats)
        if beat is None:
            view.problems.append(
                f"{host.name}: {name} has no heartbeat in Redis (not running, or not connected)"
            )
            cell.append("no heartbeat\n", style="bold red")
            continue
        ready = beat.get("comfyui_ready") and beat.get("state") == "ready"
        running = beat.get("running") or []
        text = f"{beat['device']} {beat.get('state')}, {beat.get('jobs_ended', 0)} jobs"
        text += f", running {running[0]}" if running else ", idle"
        if not ready:
            view.problems.append(
                f"{host.name}: worker {beat['device']} is {beat.get('state')} (ComfyUI not ready)"
            )
        cell.append(text + "\n", style=None if ready else "bold red")
    cell.rstrip()
    return cell


def _gpus_cell(report: dict[str, Any]) -> Text:
    gpus = report.get("gpus")
    if gpus is None:
        return _ok("none")
    cell = Text()
    for gpu in gpus:
        if "error" in gpu:
            cell.append(f"nvidia-smi: {gpu['error']}\n", style="bold red")
        else:
            used, total = gpu["used_mib"] / 1024, gpu["total_mib"] / 1024
            cell.append(f"{gpu['index']}: {gpu['name']} {used:.1f}/{total:.1f} GB\n")
    cell.rstrip()
    return cell


def _catalog_cell(beats: list[dict[str, Any]], active: str | None) -> Text:
    versions = sorted({run.rpartition("@")[2][:12] for b in beats for run in b.get("runs", [])})
    if not beats:
        return _ok("-")
    if active is not None and active[:12] not in versions:
        return _bad(f"not {active[:12]} ({', '.join(versions) or 'none checked'})")
    return _ok(active[:12] if active else ", ".join(versions))


def fleet_view(
    hosts: list[FleetHost], reports: dict[str, dict[str, Any]], fleet_report: dict[str, Any] | None
) -> FleetView:
    """The rows for ``hosts`` from their reports (a host without one was unreachable)."""
    view = FleetView()
    beats: list[dict[str, Any]] | None = None
    active: str | None = None
    if fleet_report is None:
        view.problems.append("the fleet's state (Redis, via the API's host) could not be read")
    elif "error" in fleet_report:
        view.problems.append(f"the fleet's state: {fleet_report['error']}")
    else:
        beats, active = fleet_report["workers"], fleet_report.get("catalog_version")
        queue = fleet_report["queue"]
        waiting = queue["waiting_by_priority"]
        by_priority = ", ".join(f"priority {p}: {n}" for p, n in waiting.items())
        total = sum(waiting.values())
        view.queue = (
            f"queue: {total} waiting{f' ({by_priority})' if by_priority else ''}, {queue['running']} running"
        )
        view.queue += f"; catalog {active[:12] if active else 'none active'}"
        if active is None:
            view.problems.append("no catalog version is active (comfyjobs catalog publish)")
    for host in hosts:
        roles = ",".join(r for r in ("redis", "api", "gpu") if r in host.roles)
        report = reports.get(host.name)
        if report is None:
            view.problems.append(f"{host.name}: unreachable (SSH)")
            view.rows.append([_ok(host.name), _ok(roles), _bad("unreachable"), *[_ok("")] * 7])
            continue
        if "error" in report and "units" not in report:
            view.problems.append(f"{host.name}: {report['error']}")
            view.rows.append([_ok(host.name), _ok(roles), _bad(report["error"]), *[_ok("")] * 7])
            continue
        if "error" in report:
            view.problems.append(f"{host.name}: {report['error']}")
        free = report.get("disk_free_gb")
        disk = _ok(f"{free:.0f} GB") if free is not None else _bad("?")
        if free is not None and free < MIN_DISK_FREE_GB:
            disk = _bad(f"{free:.1f} GB")
            view.problems.append(f"{host.name}: only {free:.1f} GB free")
        used, cap = report.get("model_cache_gb"), report.get("model_cache_max_gb")
        cache = _ok(f"{used:.1f}{f'/{cap:g}' if cap else ''} GB" if used is not None else "?")
        if used is not None and cap and used > cap:
            cache = _bad(f"{used:.1f}/{cap:g} GB")
            view.problems.append(f"{host.name}: the model cache is over its cap ({used:.1f} of {cap:g} GB)")
        comfyui = report.get("comfyui_version")
        ours = [b for b in beats or [] if any(b.get("pid") == u.get("pid") for u in report["units"].values())]
        view.rows.append(
            [
                _ok(host.name),
                _ok(roles),
                _ok("yes"),
                _units_cell(host, report, view),
                _workers_cell(host, report, beats, view),
                _gpus_cell(report),
                _ok(comfyui or "-") if comfyui or not host.workers else _bad("missing"),
                disk,
                cache,
                _catalog_cell(ours, active) if host.workers else _ok("-"),
            ]
        )
        if host.workers and not comfyui:
            view.problems.append(f"{host.name}: no ComfyUI in {host.install_root / 'ComfyUI'}")
    return view


def print_view(view: FleetView, console: Console | None = None) -> None:
    console = console or Console(width=200, soft_wrap=False)
    table = Table(title="comfyjobs fleet", show_lines=True)
    for column in (
        "host",
        "roles",
        "reachable",
        "units",
        "workers",
        "GPUs",
        "ComfyUI",
        "disk free",
        "model cache",
        "catalog",
    ):
        table.add_column(column)
    for row in view.rows:
        table.add_row(*row)
    console.print(table)
    if view.queue:
        console.print(view.queue)
    for problem in view.problems:
        console.print(Text(f"problem: {problem}", style="bold red"))
    if not view.problems:
        console.print("all well")
