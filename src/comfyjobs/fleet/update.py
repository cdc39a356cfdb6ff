"""``fleet update [--ref REF]``: a new comfyjobs version across the fleet, rolling. One host at a time —
the GPU hosts first, then the API hosts — each drained (its workers stopped warm: a worker given SIGTERM
takes no new job, finishes the ones it runs, and only then exits; jobs waiting stay in Redis for the
others), brought to the commit as ``bootstrap`` does (checkout, install, .env, units), started, and seen
back (its workers' heartbeats ready in Redis; the API answering /health) before the next host. The
update stops at the first host that fails or does not come back, and says which; the hosts after it are
left as they were."""

from __future__ import annotations

import shlex
import time
from typing import Any

from comfyjobs.errors import FleetError
from comfyjobs.fleet.bootstrap import Fleet, StepLog, bootstrap_host, install_current, target_commit
from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote
from comfyjobs.fleet.services import HostServices
from comfyjobs.fleet.status import beat_of, probe_host

COME_BACK_TIMEOUT_S = 600.0
POLL_S = 1.0


def _drained_units(host: FleetHost) -> list[str]:
    """What stops before the host is changed: its workers (warm), then its API. Not Redis: the queue
    stays up through an update (its unit restarts only when its own files change)."""
    return [*host.workers, *(["comfyjobs-api.service"] if "api" in host.roles else [])]


def update_host(remote: PyinfraRemote, host: FleetHost, fleet: Fleet, timeout_s: float) -> StepLog:
    have, want = target_commit(remote, host)
    services = HostServices(remote, host)
    if have == want and install_current(remote, host, want):
        return bootstrap_host(remote, host, fleet)  # (settings or units may still have changed)
    for unit in _drained_units(host):
        started = time.monotonic()
        services.stop(unit)  # returns once the unit is gone: its jobs finished (or its stop timeout)
        print(f"[{host.name}] drained {unit} ({time.monotonic() - started:.1f} s)", flush=True)
    log = bootstrap_host(remote, host, fleet)
    wait_back(remote, host, fleet, timeout_s)
    return log


def _worker_pids_ready(report: dict[str, Any], host: FleetHost) -> tuple[int, list[str]]:
    """How many of the host's workers Redis has ready, and what is missing."""
    units, fleet = report.get("units"), report.get("fleet")
    if not isinstance(units, dict) or not isinstance(fleet, dict) or "workers" not in fleet:
        why = report.get("error") or (fleet.get("error") if isinstance(fleet, dict) else None)
        return 0, [str(why or "no report")]
    ready, missing = 0, []
    for name in host.workers:
        beat = beat_of(report, name, fleet["workers"])
        if beat is not None and beat.get("comfyui_ready") and beat.get("state") == "ready":
            ready += 1
        else:
            missing.append(f"{name}: {beat.get('state') if beat else 'no heartbeat yet'}")
    return ready, missing


def wait_back(remote: PyinfraRemote, host: FleetHost, fleet: Fleet, timeout_s: float) -> None:
    """Until the host's workers are ready in Redis and its API (if any) answers; FleetError if not in
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    missing: list[str] = []
    services = HostServices(remote, host)  # (its kind looked up once, not at every poll)
    while True:
        report = probe_host(remote, host, with_fleet=True, services=services)
        ready, missing = _worker_pids_ready(report, host)
        api_ok = "api" not in host.roles or _api_answers(remote, host)
        fleet_state = report.get("fleet") or {}
        redis_ok = "redis" not in host.roles or ("workers" in fleet_state and "error" not in fleet_state)
        if not redis_ok:
            missing.append(f"Redis: {fleet_state.get('error', 'no answer')}")
        if ready == len(host.workers) and api_ok and redis_ok:
            print(
                f"[{host.name}] back: {ready} worker(s) ready after {time.monotonic() - started:.1f} s",
                flush=True,
            )
            return
        if not api_ok:
            missing.append("the API does not answer /health")
        if time.monotonic() > deadline:
            raise FleetError(f"{host.name}: did not come back within {timeout_s:.0f} s: {'; '.join(missing)}")
        time.sleep(POLL_S)  # (another machine, over SSH: asked again)


def _api_answers(remote: PyinfraRemote, host: FleetHost) -> bool:
    python = shlex.quote(str(host.venv / "bin" / "python"))
    url = f"http://127.0.0.1:{host.api_port}/health"
    check = (
        f"import json, urllib.request; print(json.load(urllib.request.urlopen({url!r}, timeout=5))['status'])"
    )
    ran = remote.run(f"{python} -c {shlex.quote(check)}", step="API /health", check=False)
    return ran.ok and ran.output.strip().endswith("ok")
