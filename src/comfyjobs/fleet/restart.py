"""``fleet restart api|workers|comfyui|redis``: the units of that kind restarted the rolling way (one host
at a time, GPU hosts first, each seen back before the next). A worker is drained first: stopping it is a
warm shutdown (it finishes its jobs; waiting jobs stay in Redis for the others). A worker owns its
ComfyUI, which starts and stops with it: ``comfyui`` restarts the worker units, drained, like
``workers``. Restarting ``redis`` keeps every accepted job (its append-only file); the workers and the
API reconnect by themselves."""

from __future__ import annotations

import time

from comfyjobs.errors import FleetError
from comfyjobs.fleet.bootstrap import Fleet, StepLog
from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote
from comfyjobs.fleet.services import HostServices
from comfyjobs.fleet.update import wait_back

KINDS = ("api", "workers", "comfyui", "redis")


def units_of(host: FleetHost, kind: str) -> list[str]:
    if kind not in KINDS:
        raise FleetError(f"restart {kind!r}: choose one of {', '.join(KINDS)}")
    if kind in ("workers", "comfyui"):
        return host.workers
    unit = f"comfyjobs-{kind}.service"
    return [unit] if unit in host.units else []


def restart_host(
    remote: PyinfraRemote, host: FleetHost, fleet: Fleet, kind: str, timeout_s: float
) -> StepLog:
    log = StepLog(host.name)
    units = units_of(host, kind)
    if not units:
        log.said(f"restart {kind}", False, "none on this host")
        return log
    services = HostServices(remote, host)
    for unit in units:
        started = time.monotonic()
        services.stop(unit)  # (returns once it is gone: a worker's jobs finished)
        services.start(unit)
        print(
            f"[{host.name}] restarted {unit} (stopped and started in {time.monotonic() - started:.1f} s)",
            flush=True,
        )
    wait_back(remote, host, fleet, timeout_s)
    log.said(f"restart {kind}", True, ", ".join(units))
    return log
