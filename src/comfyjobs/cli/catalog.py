"""`comfyjobs catalog publish | list | show | diff | activate`: the workflow catalog in Redis."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from comfyjobs.catalog.bundle import short
from comfyjobs.catalog.diff import diff
from comfyjobs.catalog.publishing import publish_folders
from comfyjobs.catalog.store import CatalogStore, opened
from comfyjobs.cli import exit_codes
from comfyjobs.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    catalog = sub.add_parser("catalog", help="the workflow catalog every API and worker runs (in Redis)")
    actions = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    publish = actions.add_parser(
        "publish", help="publish MANIFEST_DIR and WORKFLOW_DIR as a version (refused unless `check` passes)"
    )
    publish.add_argument(
        "--no-activate", action="store_true", help="only store it; `catalog activate` makes it active"
    )
    listing = actions.add_parser("list", help="published versions, newest first")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="a version's workflows, parameters and patched inputs")
    show.add_argument("version", help="a version, a unique prefix of one (4+ hex digits), or 'active'")
    show.add_argument("--json", action="store_true", help="the bundle itself (manifests and templates)")
    compare = actions.add_parser("diff", help="parameters and patched inputs added, removed or changed")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--json", action="store_true")
    activate = actions.add_parser("activate", help="validate new jobs against this version (a rollback too)")
    activate.add_argument("version")


def _when(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def run_catalog(settings: Settings, args: argparse.Namespace) -> int:
    with opened(settings.require_redis_url(), settings.queue_name) as store:
        return _run(store, settings, args)


def _run(store: CatalogStore, settings: Settings, args: argparse.Namespace) -> int:
    command = args.catalog_command
    if command == "publish":
        published = publish_folders(store, settings, activate=not args.no_activate)
        state = "published" if published.new else "already published"
        print(f"{published.version} {state}{'' if args.no_activate else ', active'}")
        for version in published.pruned:
            print(f"pruned {short(version)} (CATALOG_KEEP={settings.catalog_keep})")
        return exit_codes.OK
    if command == "list":
        versions = store.versions()
        if args.json:
            print(json.dumps([v.to_dict() for v in versions], indent=2))
            return exit_codes.OK
        for v in versions:
            mark = "*" if v.active else " "
            when, workflows = _when(v.published_at), ", ".join(v.workflows)
            print(f"{mark} {short(v.version)}  {when}  jobs {v.jobs:<5} {v.source}  {workflows}")
        if not versions:
            print("no catalog published on this queue (`comfyjobs catalog publish`)")
        return exit_codes.OK
    if command == "show":
        version = store.resolve(args.version)
        bundle = store.bundle(version)
        if args.json:
            print(bundle.to_bytes().decode())
            return exit_codes.OK
        registry = bundle.registry()
        print(f"catalog {version}{' (active)' if version == store.active() else ''}")
        for workflow in registry.workflows.values():
            print(f"\n{workflow.id}  ({workflow.template_file})  {workflow.description}")
            for param in workflow.parameters.values():
                where = ", ".join(
                    f"{t.node_id}({workflow.template[t.node_id]['class_type']}).{t.input}"
                    for t in param.targets
                )
                shown = f"= {param.value!r}" if param.fixed else param.type
                print(f"  {param.name:<18} {shown:<10} -> {where}")
        return exit_codes.OK
    if command == "diff":
        a, b = store.resolve(args.a), store.resolve(args.b)
        changes = diff(store.bundle(a).registry(), store.bundle(b).registry())
        if args.json:
            print(json.dumps([c.to_dict() for c in changes], indent=2, default=str))
        else:
            print(f"{short(a)} -> {short(b)}: {len(changes)} change(s)")
            for change in changes:
                print(change.line())
        return exit_codes.OK
    if command == "activate":
        version = store.resolve(args.version)
        store.activate(version)
        print(f"{version} active")
        return exit_codes.OK
    raise AssertionError(command)
