"""What ``comfyjobs fleet status`` asks a host, run there in its checkout (with its .env)::

    .venv/bin/python -m comfyjobs.fleet.probe --manager systemd|fallback --units-dir DIR [--fleet] UNIT...

One JSON object on stdout: the units' states and main pids, the disk, the GPUs (nvidia-smi), the ComfyUI
version, the model cache against its cap; with ``--fleet`` (the API's host) also what Redis says of the
whole fleet: every worker's heartbeat, the queue by priority and the active catalog version. What cannot
be read is reported as such (``"error"``), never a traceback."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from comfyjobs import keys
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.errors import ComfyJobsError
from comfyjobs.fleet.units import Units
from comfyjobs.heartbeat import fresh_beats
from comfyjobs.provision.model_cache import ModelCache
from comfyjobs.settings import Settings

GB = 1024**3
REDIS_TIMEOUT_S = 5.0


def units_state(manager: str, units_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per unit: ``state`` (systemd's ActiveState: active, inactive, failed, activating...) and ``pid``."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        if manager == "systemd":
            shown = subprocess.run(
                ["systemctl", "show", "-p", "ActiveState", "-p", "MainPID", name],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            values = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
            pid = int(values.get("MainPID", "0") or 0)
            found[name] = {"state": values.get("ActiveState", "unknown"), "pid": pid or None}
        else:
            status = Units(units_dir).status(name)
            found[name] = {"state": status["active"], "pid": status.get("pid")}
    return found


def gpus() -> list[dict[str, Any]] | None:
    """Each GPU's name and memory (MiB), from nvidia-smi; None where there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=index,name,memory.used,memory.total"
    done = subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return [
            {"error": (done.stderr or done.stdout).strip()[:200] or f"nvidia-smi exited {done.returncode}"}
        ]
    found = []
    for line in done.stdout.strip().splitlines():
        index, name, used, total = (part.strip() for part in line.split(","))
        found.append({"index": int(index), "name": name, "used_mib": int(used), "total_mib": int(total)})
    return found


def comfyui_version(comfyui_dir: Path) -> str | None:
    try:
        text = (comfyui_dir / "comfyui_version.py").read_text()
    except OSError:
        return None
    found = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    return found.group(1) if found else None


def host_state(settings: Settings) -> dict[str, Any]:
    disk = shutil.disk_usage(settings.model_dir if settings.model_dir.exists() else settings.data_dir)
    cache = ModelCache(settings.model_cache_root, settings.model_cache_max_bytes, lambda *a, **k: None)  # type: ignore[arg-type]
    return {
        "hostname": socket.gethostname(),
        "disk_free_gb": round(disk.free / GB, 1),
        "disk_total_gb": round(disk.total / GB, 1),
        "gpus": gpus(),
        "comfyui_version": comfyui_version(settings.comfyui_dir),
        "model_cache_gb": round(cache.size_bytes() / GB, 2),
        "model_cache_max_gb": settings.model_cache_max_gb,
    }


def fleet_state(settings: Settings) -> dict[str, Any]:
    """The whole fleet as Redis has it: heartbeats, the queue by priority, the active catalog."""
    if settings.redis_url is None:
        return {"error": "REDIS_URL is not set in its .env"}
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    queue = settings.queue_name
    try:
        beats, _ = fresh_beats(client.hgetall(keys.WORKERS))
        depths = {int(p): int(n) for p, n in client.hgetall(keys.queue_depths(queue)).items() if int(n) > 0}
        running = int(client.zcard(keys.queue_running(queue)))
        active = CatalogStore(client, queue).active()
    except (redis.RedisError, ComfyJobsError) as exc:
        return {"error": f"Redis: {exc}"}
    finally:
        client.close()
    return {
        "workers": [
            b.model_dump(mode="json", include=_BEAT_FIELDS) for b in beats if b.queue in (None, queue)
        ],
        "queue": {"waiting_by_priority": dict(sorted(depths.items(), reverse=True)), "running": running},
        "catalog_version": active,
    }


_BEAT_FIELDS = {
    "worker_id",
    "device",
    "pid",
    "comfyui_ready",
    "comfyui_restarts",
    "state",
    "runs",
    "cannot",
    "jobs_ended",
    "running",
    "devices",
    "seen_at",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyjobs.fleet.probe", description=__doc__)
    parser.add_argument("--manager", choices=["systemd", "fallback"], required=True)
    parser.add_argument("--units-dir", type=Path, required=True)
    parser.add_argument("--fleet", action="store_true", help="also the fleet's state in Redis")
    parser.add_argument("units", nargs="*")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"units": units_state(args.manager, args.units_dir, args.units)}
    try:
        settings = Settings.load()
    except ComfyJobsError as exc:
        report["error"] = f"settings: {exc}"
    else:
        report |= host_state(settings)
        if args.fleet:
            report["fleet"] = fleet_state(settings)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
