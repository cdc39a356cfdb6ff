"""The fleet's verbs as pyinfra deploys: each ``deploy/fleet/<verb>.py`` calls one of these, which adds
its operations for the host pyinfra runs it for (``python.call``: the steps run as the operation
executes, over that host's connection). The same files run from ``comfyjobs fleet <verb>`` and from
``pyinfra INVENTORY deploy/fleet/<verb>.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comfyjobs.errors import FleetError
from comfyjobs.fleet.bootstrap import Fleet, StepLog, bootstrap_host, wait_for_workers
from comfyjobs.fleet.host_files import Secrets
from comfyjobs.fleet.hosts import FleetHost, fleet_host
from comfyjobs.fleet.remote import PyinfraRemote


class _FleetErrorsWithoutTraceback(logging.Filter):
    """A step that fails raises FleetError, whose message names the host and the step: pyinfra logs the
    traceback of any error in a Python callback, which for ours is noise (it prints the message too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Traceback") and "comfyjobs.errors.FleetError" in text)


logging.getLogger("pyinfra").addFilter(_FleetErrorsWithoutTraceback())


def _call(name: str, function: Callable[[], None]) -> None:
    """``function`` as a pyinfra operation of the current host. A FleetError it raises is printed as
    one line, ``[host] what failed`` (pyinfra then marks the host failed and names the operation)."""
    from pyinfra.context import host
    from pyinfra.operations import python

    who = host.name

    def reported() -> None:
        try:
            function()
        except FleetError as exc:
            print(f"[{who}] {str(exc).removeprefix(f'{who}: ')}", flush=True)
            raise

    python.call(name=name, function=reported)


def fleet_of(inventory: Any) -> Fleet:
    """The inventory's hosts (every host, also those ``--limit`` leaves out) and the secrets."""
    hosts = {h.name: fleet_host(h.name, h.groups, h.data.dict()) for h in inventory}
    return Fleet(hosts, Secrets.load())


def _context() -> tuple[Any, Any, Fleet]:
    from pyinfra.context import host, inventory

    try:
        return host, inventory, fleet_of(inventory)
    except FleetError as exc:
        raise SystemExit(f"error: {exc}") from None


def bootstrap() -> None:
    host, _inventory, fleet = _context()
    here = fleet.hosts[host.name]

    def run() -> None:
        from pyinfra.context import host as current

        remote = PyinfraRemote(current, fleet.secrets.redacted)
        print(bootstrap_host(remote, here, fleet).summary(), flush=True)

    _call(f"comfyjobs bootstrap ({', '.join(sorted(here.roles))})", run)
    if "api" in here.roles and here is fleet.api_host:

        def check() -> None:
            from pyinfra.context import state

            failed = {h.name for h in state.failed_hosts}
            if failed:
                raise FleetError(f"not checked: bootstrap failed on {', '.join(sorted(failed))}")
            seen = wait_for_workers(fleet)
            print(f"[{here.name}] /ready: {seen} of {fleet.worker_count} workers ready", flush=True)

        _call("comfyjobs: the API sees every worker ready", check)


# What each host's first operation found, for the one report the second prints (the deploy runs in one
# process: pyinfra executes an operation on every host before the next operation).
_found: dict[str, dict[str, Any]] = {}


def _reporting_host() -> tuple[bool, list[str]]:
    """Whether the host running this operation prints the report (the first live one of the inventory),
    and the names of the hosts this run covers (``--limit``), in inventory order."""
    from pyinfra.context import host, inventory, state

    covered = [h for h in inventory if state.is_host_in_limit(h)]
    live = [h for h in covered if h in state.active_hosts]
    return bool(live) and live[0].name == host.name, [h.name for h in covered]


def _collect_and_report(verb: str, collect: Any, report: Any) -> None:
    """Two operations: ``collect(remote, fleet_host)`` on every host, then ``report(found, covered)``
    once, on the first live host (a host that did not connect has nothing in ``found``)."""
    host, _inventory, fleet = _context()
    here = fleet.hosts[host.name]
    found = _found.setdefault(verb, {})

    def gather() -> None:
        from pyinfra.context import host as current

        found[here.name] = collect(PyinfraRemote(current, fleet.secrets.redacted), here, fleet)

    def print_report() -> None:
        first, covered = _reporting_host()
        if first:
            report(fleet, found, covered)

    _call(f"comfyjobs {verb}: ask the host", gather)
    _call(f"comfyjobs {verb}: the fleet", print_report)


def status() -> None:
    from comfyjobs.fleet.status import fleet_view, print_view, probe_host

    def collect(remote: PyinfraRemote, here: FleetHost, fleet: Fleet) -> dict[str, Any]:
        return probe_host(remote, here, with_fleet=here is fleet.api_host)

    def report(fleet: Fleet, found: dict[str, Any], covered: list[str]) -> None:
        api = fleet.api_host.name
        fleet_report = found.get(api, {}).get("fleet")  # (None: --limit left it out, or unreachable)
        view = fleet_view([fleet.hosts[n] for n in covered], found, fleet_report)
        print_view(view)
        if view.problems:
            raise FleetError(f"fleet status: {len(view.problems)} problem(s), listed above")

    _collect_and_report("status", collect, report)


def logs() -> None:
    from pyinfra.context import host as this

    from comfyjobs.fleet.logs import host_lines, merged, since_s

    try:
        since = since_s(str(this.data.get("since") or "10m"))
    except FleetError as exc:
        raise SystemExit(f"error: {exc}") from None
    grep = this.data.get("grep")

    def collect(remote: PyinfraRemote, here: FleetHost, _fleet: Fleet) -> Any:
        return host_lines(remote, here, since, str(grep) if grep else None)

    def report(_fleet: Fleet, found: dict[str, Any], _covered: list[str]) -> None:
        lines = merged(found)
        for line in lines:
            print(line, flush=False)
        print(f"({len(lines)} line(s) from {len(found)} host(s))", flush=True)

    _collect_and_report("logs", collect, report)


_rollouts: dict[str, Any] = {}  # verb -> its Rollout, shared by the hosts' operations
_turns: dict[str, Any] = {}  # host -> gevent Event, set once its turn is over


def _rolling(verb: str, present: str, past: str, act: Callable[[PyinfraRemote, FleetHost], StepLog]) -> None:
    """One operation per host; every host's starts at once (pyinfra runs an operation on all hosts side
    by side), and each waits for the turns of the hosts before it in the rolling order, so the hosts go
    one at a time. The first that fails or could not be reached stops those after it. Not for --serial
    (the turns would wait on hosts pyinfra has not started)."""
    from comfyjobs.fleet.rolling import Rollout, rolling_order, rollout_summary

    host, _inventory, fleet = _context()
    here = fleet.hosts[host.name]

    def run() -> None:
        import gevent.event  # type: ignore[import-untyped]  # (pyinfra's: its operations are greenlets)
        from pyinfra.context import host as current
        from pyinfra.context import inventory, state

        covered = [fleet.hosts[h.name] for h in inventory if state.is_host_in_limit(h)]
        order = [h.name for h in rolling_order(covered)]
        rollout: Rollout = _rollouts.setdefault(verb, Rollout(order, past))
        turns = {name: _turns.setdefault(name, gevent.event.Event()) for name in order}
        live = [name for name in order if any(h.name == name for h in state.active_hosts)]
        for earlier in order[: order.index(here.name)]:
            if earlier in live:
                turns[earlier].wait()
            else:
                rollout.stop(earlier, "unreachable: SSH did not connect")
        try:
            if rollout.stopped_at is not None:
                at, why = rollout.stopped_at
                raise FleetError(f"{here.name}: not {past}: the {verb} stopped at {at} ({why})")
            print(f"[{here.name}] {present} ({order.index(here.name) + 1} of {len(order)})", flush=True)
            log = act(PyinfraRemote(current, fleet.secrets.redacted), here)
            rollout.done[here.name] = past if log.changed else "unchanged"
            print(log.summary(), flush=True)
        except FleetError as exc:
            rollout.stop(here.name, str(exc).removeprefix(f"{here.name}: "))
            raise
        finally:
            turns[here.name].set()
            if here.name == live[-1]:
                print(f"{verb}: {rollout_summary(rollout)}", flush=True)

    _call(f"comfyjobs {verb} ({', '.join(sorted(here.roles))}), rolling", run)


def _timeout_s(host: Any) -> float:
    from comfyjobs.fleet.update import COME_BACK_TIMEOUT_S

    return float(host.data.get("come_back_timeout_s") or COME_BACK_TIMEOUT_S)


def update() -> None:
    from pyinfra.context import host

    from comfyjobs.fleet.update import update_host

    _host, _inventory, fleet = _context()
    timeout_s = _timeout_s(host)
    _rolling(
        "update", "updating", "updated", lambda remote, here: update_host(remote, here, fleet, timeout_s)
    )


def restart() -> None:
    from pyinfra.context import host

    from comfyjobs.fleet.restart import restart_host, units_of

    _host, _inventory, fleet = _context()
    kind = str(host.data.get("restart") or "")
    try:
        units_of(fleet.hosts[host.name], kind)  # (a bad kind: refused before anything runs)
    except FleetError as exc:
        raise SystemExit(f"error: {exc}") from None
    timeout_s = _timeout_s(host)
    _rolling(
        "restart",
        "restarting",
        "restarted",
        lambda remote, here: restart_host(remote, here, fleet, kind, timeout_s),
    )


def sync() -> None:
    """Three operations: the catalog published on the API's host; custom nodes and models on every GPU
    host (side by side: each host's progress printed with its name); then, rolling, the workers of the
    hosts whose custom nodes changed restarted (drained)."""
    from pyinfra.context import host

    from comfyjobs.fleet.restart import restart_host
    from comfyjobs.fleet.sync import SyncSource, publish, sync_gpu_host, unpacked

    _host, _inventory, fleet = _context()
    here = fleet.hosts[host.name]
    found = _found.setdefault("sync", {})
    if "source" not in found:
        folders = {k: Path(str(host.data.get(f"sync_{k}") or d)) for k, d in _SYNC_DEFAULTS.items()}
        try:
            found["source"] = SyncSource.pack(folders["manifests"], folders["workflows"], folders["configs"])
        except FleetError as exc:
            raise SystemExit(f"error: {exc}") from None
    source: SyncSource = found["source"]
    timeout_s = _timeout_s(host)

    def publish_catalog() -> None:
        from pyinfra.context import host as current

        remote = PyinfraRemote(current, fleet.secrets.redacted)
        version, changed = publish(remote, here, unpacked(remote, here, source))
        found["version"] = version
        state = "changed" if changed else "unchanged"
        print(f"[{here.name}] catalog: {state} ({version[:12]} active)", flush=True)

    def nodes_and_models() -> None:
        from pyinfra.context import inventory, state

        api = next(h for h in inventory if h.name == fleet.api_host.name)
        if state.is_host_in_limit(api) and "version" not in found:
            raise FleetError(f"{here.name}: not synced: the catalog was not published on {api.name}")
        from pyinfra.context import host as current

        remote = PyinfraRemote(current, fleet.secrets.redacted)
        log, nodes_changed = sync_gpu_host(remote, here, unpacked(remote, here, source))
        if nodes_changed:
            found.setdefault("nodes_changed", set()).add(here.name)
        print(log.summary(), flush=True)

    def restart_changed(remote: PyinfraRemote, at: FleetHost) -> StepLog:
        if at.name not in found.get("nodes_changed", set()):
            return StepLog(at.name)
        return restart_host(remote, at, fleet, "workers", timeout_s)

    if here.name == fleet.api_host.name:
        _call("comfyjobs sync: publish the catalog", publish_catalog)
    if here.workers:
        _call("comfyjobs sync: custom nodes and models", nodes_and_models)
    _rolling("sync", "restart check", "restarted", restart_changed)


_SYNC_DEFAULTS = {"manifests": "manifests", "workflows": "workflows", "configs": "install/configs"}
