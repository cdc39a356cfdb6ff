"""A fleet host as the inventory describes it: its roles (the inventory's groups `redis`, `api`, `gpu`) and
its host data (pyinfra's: standard SSH data such as ``ssh_hostname`` works unchanged), with the paths and
ports comfyjobs puts there. Every field has the default of a bare Debian/Ubuntu box."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfyjobs.errors import FleetError

ROLES = ("redis", "api", "gpu")
REPO_URL = "https://github.com/comfyjobs/comfyjobs.git"


class FleetHost(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    roles: frozenset[str]
    address: str = Field(description="how the other hosts reach this one (`fleet_address`)")
    install_root: Path = Path("/opt/comfyjobs")  # the checkout, its .venv and ComfyUI
    etc_dir: Path = Path("/etc/comfyjobs")  # redis.conf (0600)
    data_dir: Path = Path("/var/lib/comfyjobs")
    model_dir: Path | None = None  # a block volume for models; default: install_root/models
    units_dir: Path = Path("/etc/systemd/system")
    service_manager: Literal["auto", "systemd", "fallback"] = "auto"
    service_user: str = "comfyjobs"
    gpus: int = Field(default=0, ge=0)
    cpu: bool = False  # one CPU worker (no GPU): tests, a CPU box
    labels: tuple[str, ...] = ()
    api_port: int = 8000
    api_bind: str = "0.0.0.0"
    redis_port: int = 6379
    comfyui_base_port: int = 8188
    repo_url: str = REPO_URL
    ref: str = "main"
    install_args: tuple[str, ...] = ()  # extra install/install.sh options (e.g. --no-models)
    install_env: dict[str, str] = {}  # its environment (TORCH_INDEX_URL, UV_CACHE_DIR, ...)
    fleet_env: dict[str, str] = {}  # settings for every host's .env (group data `all`), not secrets
    env: dict[str, str] = {}  # this host's settings over them

    @property
    def env_file(self) -> Path:
        """The checkout's .env (0600): settings and secrets, read by each unit and each command."""
        return self.install_root / ".env"

    @property
    def venv(self) -> Path:
        return self.install_root / ".venv"

    @property
    def models(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.install_root / "models"

    @property
    def workers(self) -> list[str]:
        """Its worker units: one per GPU, or the CPU one."""
        if "gpu" not in self.roles:
            return []
        if self.cpu:
            return ["comfyjobs-worker-cpu.service"]
        return [f"comfyjobs-worker@{n}.service" for n in range(self.gpus)]

    @property
    def units(self) -> list[str]:
        """Its units, in the order they start."""
        return [
            *(["comfyjobs-redis.service"] if "redis" in self.roles else []),
            *(["comfyjobs-api.service"] if "api" in self.roles else []),
            *self.workers,
        ]


def fleet_host(name: str, groups: Iterable[str], data: Mapping[str, Any]) -> FleetHost:
    """The host ``name`` from its inventory groups and host data; FleetError naming what is wrong."""
    roles = frozenset(g for g in groups if g in ROLES)
    fields = {k: v for k, v in data.items() if k in FleetHost.model_fields}
    address = data.get("fleet_address") or data.get("ssh_hostname") or name
    try:
        host = FleetHost.model_validate({**fields, "name": name, "roles": roles, "address": address})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise FleetError(f"inventory: host {name}: {problems}") from None
    if not roles:
        raise FleetError(f"inventory: host {name} is in none of the groups {', '.join(ROLES)}")
    if "gpu" in roles and not host.cpu and host.gpus == 0:
        raise FleetError(f"inventory: gpu host {name} needs gpus=N (N >= 1) or cpu=True")
    return host
