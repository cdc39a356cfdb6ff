"""What the fleet writes on a host, as text: its comfyjobs.env (the fleet's secrets and this host's
settings), its redis.conf, and its units, rendered from the unit files in deploy/systemd/ with this host's
paths and user (the same files an operator installs by hand)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

from comfyjobs.errors import FleetError
from comfyjobs.fleet.hosts import FleetHost

UNIT_SOURCES = Path(__file__).resolve().parents[3] / "deploy" / "systemd"
SECRETS_FILE = Path("deploy/fleet/secrets.env")  # never committed (.gitignore)
SECRET_NAMES = (
    "REDIS_PASSWORD",  # the fleet's Redis (requirepass; in each host's REDIS_URL)
    "API_KEYS",
    "ADMIN_API_KEYS",
    "WEBHOOK_SECRET",
    "S3_ACCESS_KEY_ID",  # the bucket's keys (STORAGE_BACKEND=s3 in fleet_env)
    "S3_SECRET_ACCESS_KEY",
    "HF_TOKEN",
    "CIVITAI_TOKEN",
)
HEADER = "# Written by `comfyjobs fleet`: edit the inventory (env=...) or the secrets, not this file.\n"


@dataclass(frozen=True)
class Secrets:
    values: Mapping[str, str]

    @classmethod
    def load(cls, path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Secrets:
        """From ``path`` (default deploy/fleet/secrets.env, or COMFYJOBS_FLEET_SECRETS), then the
        operator's environment over it. REDIS_PASSWORD is required."""
        path = path or Path(environ.get("COMFYJOBS_FLEET_SECRETS", SECRETS_FILE))
        found: dict[str, str] = {}
        if path.is_file():
            found = {k: v for k, v in dotenv_values(path).items() if v is not None}
            unknown = sorted(set(found) - set(SECRET_NAMES))
            if unknown:
                raise FleetError(f"secrets {path}: unknown names {', '.join(unknown)}")
        found |= {name: environ[name] for name in SECRET_NAMES if environ.get(name)}
        if not found.get("REDIS_PASSWORD"):
            raise FleetError(f"REDIS_PASSWORD is not set (in the environment or {path})")
        return cls(found)

    def redacted(self, text: str) -> str:
        """``text`` with every secret value replaced (anything printed goes through this)."""
        for value in sorted(self.values.values(), key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text


def redis_url(redis_host: FleetHost, secrets: Secrets) -> str:
    password = quote(secrets.values["REDIS_PASSWORD"], safe="")
    return f"redis://:{password}@{redis_host.address}:{redis_host.redis_port}/0"


def env_file(host: FleetHost, redis_host: FleetHost, secrets: Secrets) -> str:
    """The host's .env: where things are on it, the fleet's settings, this host's, and the secrets."""
    settings = {
        "REDIS_URL": redis_url(redis_host, secrets),
        "DATA_DIR": str(host.data_dir),
        "MODEL_DIR": str(host.models),
        "COMFYUI_DIR": str(host.install_root / "ComfyUI"),
        "MANIFEST_DIR": str(host.install_root / "manifests"),
        "WORKFLOW_DIR": str(host.install_root / "workflows"),
        "API_HOST": host.api_bind,
        "API_PORT": str(host.api_port),
        "COMFYUI_BASE_PORT": str(host.comfyui_base_port),
        **({"WORKER_LABELS": ",".join(host.labels)} if host.labels else {}),
        **host.fleet_env,
        **host.env,
        **{k: v for k, v in secrets.values.items() if k != "REDIS_PASSWORD"},
    }
    return HEADER + "".join(f"{k}={_quoted(v)}\n" for k, v in settings.items())


def _quoted(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:,@%+=-]*", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def redis_conf(host: FleetHost, secrets: Secrets) -> str:
    """deploy/systemd/redis.conf for this host: its address and port, the password, its data folder."""
    text = (UNIT_SOURCES / "redis.conf").read_text()
    password = secrets.values["REDIS_PASSWORD"]
    binds = " ".join(dict.fromkeys(["127.0.0.1", host.address]))
    text = re.sub(r"(?m)^bind .*$", f"bind {binds}", text)
    text = re.sub(r"(?m)^port .*$", f"port {host.redis_port}", text)
    text = re.sub(r"(?m)^requirepass .*$", f'requirepass "{password}"', text)
    return re.sub(r"(?m)^dir .*$", f"dir {host.data_dir / 'redis'}", text)


def unit_files(host: FleetHost, redis_server: str) -> dict[str, str]:
    """File name -> text of each unit file the host needs (a worker template serves every GPU)."""
    wanted: dict[str, str] = {}
    if "redis" in host.roles:
        wanted["comfyjobs-redis.service"] = "comfyjobs-redis.service"
    if "api" in host.roles:
        wanted["comfyjobs-api.service"] = "comfyjobs-api.service"
    if host.workers:
        name = "comfyjobs-worker-cpu.service" if host.cpu else "comfyjobs-worker@.service"
        wanted[name] = "comfyjobs-worker@.service"
    return {name: _rendered(host, source, name, redis_server) for name, source in wanted.items()}


def _rendered(host: FleetHost, source: str, name: str, redis_server: str) -> str:
    text = (UNIT_SOURCES / source).read_text()
    paths = {  # (in one pass: a host's path may hold a default one, as /srv/x/opt/comfyjobs does)
        "/etc/comfyjobs/comfyjobs.env": str(host.env_file),
        "/etc/comfyjobs/redis.conf": str(host.etc_dir / "redis.conf"),
        "/usr/bin/redis-server": redis_server,
        "/opt/comfyjobs": str(host.install_root),
        "/var/lib/comfyjobs": str(host.data_dir),
    }
    text = re.sub("|".join(map(re.escape, paths)), lambda m: paths[m.group(0)], text)
    user = host.service_user
    text = re.sub(r"(?m)^User=.*$", f"User={user}", text)
    text = re.sub(r"(?m)^Group=.*$", f"Group={user}", text)
    if name == "comfyjobs-worker-cpu.service":
        text = text.replace("worker --gpu %i", "worker --cpu").replace("on GPU %i", "on the CPU")
    return text
