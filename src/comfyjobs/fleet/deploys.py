"""The fleet's verbs as pyinfra deploys: each ``deploy/fleet/<verb>.py`` calls one of these, which adds
its operations for the host pyinfra runs it for (``python.call``: the steps run as the operation
executes, over that host's connection). The same files run from ``comfyjobs fleet <verb>`` and from
``pyinfra INVENTORY deploy/fleet/<verb>.py``."""

from __future__ import annotations

import logging
from typing import Any

from comfyjobs.errors import FleetError
from comfyjobs.fleet.bootstrap import Fleet, bootstrap_host, wait_for_workers
from comfyjobs.fleet.host_files import Secrets
from comfyjobs.fleet.hosts import fleet_host
from comfyjobs.fleet.remote import PyinfraRemote


class _FleetErrorsWithoutTraceback(logging.Filter):
    """A step that fails raises FleetError, whose message names the host and the step: pyinfra logs the
    traceback of any error in a Python callback, which for ours is noise (it prints the message too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Traceback") and "comfyjobs.errors.FleetError" in text)


logging.getLogger("pyinfra").addFilter(_FleetErrorsWithoutTraceback())


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
    from pyinfra.operations import python

    host, _inventory, fleet = _context()
    here = fleet.hosts[host.name]

    def run() -> None:
        from pyinfra.context import host as current

        remote = PyinfraRemote(current, fleet.secrets.redacted)
        print(bootstrap_host(remote, here, fleet).summary(), flush=True)

    python.call(name=f"comfyjobs bootstrap ({', '.join(sorted(here.roles))})", function=run)
    if "api" in here.roles and here is fleet.api_host:

        def check() -> None:
            from pyinfra.context import state

            failed = {h.name for h in state.failed_hosts}
            if failed:
                raise FleetError(f"not checked: bootstrap failed on {', '.join(sorted(failed))}")
            seen = wait_for_workers(fleet)
            print(f"[{here.name}] /ready: {seen} of {fleet.worker_count} workers ready", flush=True)

        python.call(name="comfyjobs: the API sees every worker ready", function=check)
