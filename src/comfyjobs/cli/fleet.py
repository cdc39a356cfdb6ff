"""`comfyjobs fleet <verb> [--inventory FILE] [--limit HOST]`: each verb runs the pyinfra deploy
deploy/fleet/<verb>.py against the inventory (what `pyinfra INVENTORY deploy/fleet/<verb>.py` runs)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from comfyjobs.cli import exit_codes
from comfyjobs.errors import FleetError
from comfyjobs.fleet.logs import since_s
from comfyjobs.fleet.restart import KINDS

FLEET_DIR = Path(__file__).resolve().parents[3] / "deploy" / "fleet"
VERBS = {
    "bootstrap": "a bare host to serving: packages, checkout, install, .env, units, started, checked",
    "status": "one table: hosts, units, workers, GPUs, ComfyUI, disk, model cache, catalog; the queue",
    "update": "a new version across the fleet, rolling: one host at a time, drained, updated, seen back",
    "sync": "publish the catalog; custom nodes and models on every GPU host; restart what changed",
    "restart": "api, workers, comfyui or redis restarted the same rolling way, workers drained first",
    "logs": "the journal of every comfyjobs unit on the hosts, merged in time order",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser("fleet", help="deploy and run the hosts of an inventory over SSH (pyinfra)")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True, metavar="VERB")
    for verb, text in VERBS.items():
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument(
            "--inventory",
            type=Path,
            default=Path(os.environ.get("COMFYJOBS_FLEET_INVENTORY", FLEET_DIR / "inventory.py")),
            help="a pyinfra inventory (default: COMFYJOBS_FLEET_INVENTORY, else deploy/fleet/inventory.py)",
        )
        parser.add_argument("--limit", action="append", metavar="HOST", help="only this host (or group)")
        if verb in ("bootstrap", "update"):
            parser.add_argument("--ref", help="the commit to deploy (default: this checkout's HEAD)")
        if verb == "sync":
            for name, default in (
                ("manifests", "manifests"),
                ("workflows", "workflows"),
                ("configs", "install/configs"),
            ):
                parser.add_argument(
                    f"--{name}", type=Path, default=Path(default), help=f"default: ./{default}"
                )
        if verb == "restart":
            parser.add_argument("what", choices=KINDS, help="which units")
        if verb == "logs":
            parser.add_argument("--since", default="10m", help="how far back: 90s, 10m, 2h, 1d (default 10m)")
            parser.add_argument("--grep", metavar="TEXT", help="only lines holding TEXT (any case)")


def _commit(ref: str | None) -> str:
    """``ref`` (default HEAD) as a commit of this checkout; as given when git does not know it here."""
    found = subprocess.run(
        ["git", "-C", str(FLEET_DIR), "rev-parse", "--verify", "--quiet", f"{ref or 'HEAD'}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode == 0:
        return found.stdout.strip()
    if ref is None:
        raise FleetError("--ref is needed: this is not a git checkout")
    return ref


def pyinfra_argv(args: argparse.Namespace) -> list[str]:
    verb = args.fleet_command
    if not args.inventory.is_file():
        raise FleetError(f"inventory {args.inventory}: no such file (see deploy/fleet/inventory.py)")
    argv = [sys.executable, "-m", "pyinfra", str(args.inventory), str(FLEET_DIR / f"{verb}.py"), "-y"]
    for limit in args.limit or []:
        argv += ["--limit", limit]
    if verb in ("bootstrap", "update"):
        argv += ["--data", f"ref={_commit(args.ref)}"]
    if verb == "restart":
        argv += ["--data", f"restart={args.what}"]
    if verb == "sync":
        for name in ("manifests", "workflows", "configs"):
            argv += ["--data", f"sync_{name}={getattr(args, name).resolve()}"]
    if verb == "logs":
        since_s(args.since)  # (a bad value: refused here, before any host is asked)
        argv += ["--data", f"since={args.since}"]
        if args.grep:
            argv += ["--data", f"grep={args.grep}"]
    return argv


def run_fleet(args: argparse.Namespace) -> int:
    completed = subprocess.run(pyinfra_argv(args), check=False)
    return exit_codes.OK if completed.returncode == 0 else exit_codes.ERROR
