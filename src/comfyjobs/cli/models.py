"""`comfyjobs models report` (per model folder: files, size, last used, the workflows using each, the
cache against its cap) and `comfyjobs models prune [--dry-run]` (the host's model cache back under
MODEL_CACHE_MAX_GB, least recently used first, never a file a job uses; links to removed files go)."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.filesize import decimal

from comfyjobs.catalog.store import opened
from comfyjobs.cli import exit_codes
from comfyjobs.errors import ComfyJobsError, ModelDownloadError
from comfyjobs.graphs.models import models_of
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.registry import Registry
from comfyjobs.manifests.schema import MODEL_FOLDERS
from comfyjobs.provision.model_cache import ModelCache
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.settings import Settings
from comfyjobs.storage.models import list_model_folder
from comfyjobs.worker.on_demand import OnDemandModels

log = logging.getLogger(__name__)


def _registry(settings: Settings) -> tuple[Registry | None, str]:
    """The active catalog version's registry (what the fleet runs), else this machine's manifests."""
    try:
        with opened(settings.require_redis_url(), settings.queue_name, timeout_s=3) as store:
            version = store.require_active()
            return store.bundle(version).registry(), f"catalog {version[:12]}"
    except Exception as exc:  # (no Redis reachable, or none active: the local files say it)
        log.debug("active catalog not read: %s", exc)
    try:
        return load_registry(settings.manifest_dir, settings.workflow_dir), "local manifests"
    except ComfyJobsError:
        return None, "no manifests"


def _users(registry: Registry | None) -> dict[str, set[str]]:
    """File name (as a loader names it) → the workflows that load it."""
    users: dict[str, set[str]] = {}
    for workflow in registry.workflows.values() if registry is not None else ():
        names = set(models_of(workflow.template)) | {m.name for m in workflow.models}
        for param in workflow.parameters.values():
            for value in (param.value, param.default, *(param.choices or ())):
                if isinstance(value, str):
                    names.add(value)
        for name in names:
            users.setdefault(name, set()).add(workflow.id)
    return users


def _cache(settings: Settings) -> OnDemandModels:
    urls = ModelUrls.from_settings(settings)
    cache = ModelCache(settings.model_cache_root, settings.model_cache_max_bytes, urls.download)
    return OnDemandModels(cache, urls, settings.model_dir, settings.models_shared_dir)


def _when(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def report(settings: Settings) -> dict[str, Any]:
    registry, source = _registry(settings)
    users = _users(registry)
    roots = [("local", settings.model_dir)]
    if settings.models_shared_dir is not None:
        roots.append(("shared", settings.models_shared_dir))
    folders: dict[str, list[dict[str, Any]]] = {}
    for where, root in roots:
        for folder in MODEL_FOLDERS:
            for name in list_model_folder(root, folder):
                path = root / folder / name
                try:
                    stat = path.stat()
                except OSError:
                    continue  # (a link whose file was evicted)
                folders.setdefault(folder, []).append({
                    "name": name, "where": where, "size_bytes": stat.st_size,
                    "last_used": _when(max(stat.st_atime, stat.st_mtime)), "cached": path.is_symlink(),
                    "workflows": sorted(users.get(name, ())),
                })  # fmt: skip
    on_demand = _cache(settings)
    entries = on_demand.cache.entries()
    return {
        "workflows_from": source,
        "folders": folders,
        "cache": {
            "dir": str(on_demand.cache.root),
            "size_bytes": sum(m.size_bytes for m in entries),
            "max_bytes": settings.model_cache_max_bytes,
            "files": [
                {
                    "key": m.key,
                    "name": m.path.name,
                    "size_bytes": m.size_bytes,
                    "last_used": _when(m.last_used_ns / 1e9),
                }
                for m in entries
            ],
        },
    }


def _count(into: list[int], done: int, _total: int | None) -> None:
    into.append(done)


def run_models_download_catalog(settings: Settings) -> int:
    """The models the workflows of the active catalog version list (and their fixed URL values), for the
    workflows this host's WORKER_LABELS may run: into the model cache, linked for ComfyUI, as a worker
    would before a first job. What ``fleet sync`` runs on each GPU host."""
    with opened(settings.require_redis_url(), settings.queue_name) as store:
        version = store.require_active()
        registry = store.bundle(version).registry()
    on_demand = _cache(settings)
    failed = 0
    for wid, workflow in sorted(registry.workflows.items()):
        if not workflow.labels <= settings.labels:
            print(f"skip   {wid}: needs labels {', '.join(sorted(workflow.labels - settings.labels))}")
            continue
        if not workflow.models and not any(p.fixed for p in workflow.model_parameters):
            continue
        fetched: list[int] = []
        try:
            with on_demand.prepared(workflow, {}, functools.partial(_count, fetched)):
                pass
        except ModelDownloadError as exc:
            failed += 1
            print(f"failed {wid}: {exc.message}")
            continue
        got = f", downloaded {decimal(max(fetched))}" if fetched else ""
        print(f"ok     {wid}: {len(workflow.models)} listed model(s) in place{got}")
    print(f"catalog {version[:12]}: {'all in place' if not failed else f'{failed} workflow(s) failed'}")
    return exit_codes.OK if not failed else exit_codes.ERROR


def _print_report(data: Mapping[str, Any]) -> None:
    print(f"workflows from: {data['workflows_from']}")
    for folder, files in sorted(data["folders"].items()):
        print(f"{folder}/ ({len(files)} files, {decimal(sum(f['size_bytes'] for f in files))})")
        for f in files:
            used_by = ", ".join(f["workflows"]) or "no workflow"
            tag = " [cache]" if f["cached"] else " [shared]" if f["where"] == "shared" else ""
            print(f"  {f['name']}{tag}  {decimal(f['size_bytes'])}  last used {f['last_used']}  ({used_by})")
    cache = data["cache"]
    cap = decimal(cache["max_bytes"]) if cache["max_bytes"] is not None else "no cap"
    print(f"cache {cache['dir']}: {len(cache['files'])} files, {decimal(cache['size_bytes'])} of {cap}")


def run_models_report(settings: Settings, *, as_json: bool) -> int:
    data = report(settings)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        _print_report(data)
    return exit_codes.OK


def run_models_prune(settings: Settings, *, dry_run: bool) -> int:
    on_demand = _cache(settings)
    if settings.model_cache_max_bytes is None:
        print("MODEL_CACHE_MAX_GB is not set: the cache has no cap, nothing to prune")
        return exit_codes.OK
    gone = on_demand.cache.evict(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for model in gone:
        print(f"{verb} {model.path.name} ({decimal(model.size_bytes)}, key {model.key[:16]})")
    if not dry_run:
        for link in on_demand.prune_links():
            print(f"removed link {os.fspath(link)}")
    left = on_demand.cache.size_bytes() - (sum(m.size_bytes for m in gone) if dry_run else 0)
    print(f"{verb} {len(gone)} file(s); the cache {'would hold' if dry_run else 'holds'} {decimal(left)}")
    return exit_codes.OK


__all__ = ["report", "run_models_download_catalog", "run_models_prune", "run_models_report"]
