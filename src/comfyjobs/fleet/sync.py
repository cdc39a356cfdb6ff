"""``fleet sync``: what the operator's working tree says the fleet runs. The manifests and workflows
(``--manifests``, ``--workflows``) are published as the catalog version (``catalog publish`` on the API's
host: refused unless ``comfyjobs check`` passes; the same content is the same version, so a second sync
publishes nothing new). Then every GPU host installs the custom nodes of ``install/configs/
custom_nodes.txt`` and downloads the models of ``install/configs/models.ini`` and of the active
catalog's model lists (the workflows its labels may run); the hosts whose custom nodes changed have
their workers (and so their ComfyUIs) restarted, drained, one host at a time."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyjobs.errors import FleetError
from comfyjobs.fleet.bootstrap import StepLog
from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote

NODES_FILE = "custom_nodes.txt"
MODELS_FILE = "models.ini"


@dataclass(frozen=True)
class SyncSource:
    """The operator's folders, packed once: manifests/, workflows/ and configs/ in one tar.gz."""

    data: bytes

    @classmethod
    def pack(cls, manifests: Path, workflows: Path, configs: Path) -> SyncSource:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, folder in (("manifests", manifests), ("workflows", workflows), ("configs", configs)):
                if not folder.is_dir():
                    raise FleetError(f"sync: {folder} is not a folder (--{name})")
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        info = tar.gettarinfo(str(path), arcname=f"{name}/{path.relative_to(folder)}")
                        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                        with path.open("rb") as handle:
                            tar.addfile(info, handle)
        return cls(buffer.getvalue())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


def _has_entries(path: Path) -> str:
    """A shell test: the file exists and has a line that is not a comment."""
    return f"grep -q -v -E '^[[:space:]]*([#;]|$)' {shlex.quote(str(path))} 2>/dev/null"


def unpacked(remote: PyinfraRemote, host: FleetHost, source: SyncSource) -> Path:
    """The source on the host (under DATA_DIR/sync/<digest>), uploaded unless already there."""
    folder = host.data_dir / "sync" / source.digest
    q = shlex.quote(str(folder))
    if remote.run(f"test -d {q} && echo present || true", step="sync upload").output.strip() == "present":
        return folder
    archive = host.data_dir / "sync" / f"{source.digest}.tar.gz"
    remote.put(archive, source.data, step="sync upload")
    remote.run(
        f"mkdir -p {q}.new && tar -xzf {shlex.quote(str(archive))} -C {q}.new && mv {q}.new {q}"
        f" && rm -f {shlex.quote(str(archive))}",
        step="sync upload",
    )
    return folder


def _comfyjobs(host: FleetHost, args: str, env: str = "") -> str:
    root = shlex.quote(str(host.install_root))
    return f"cd {root} && {env}{shlex.quote(str(host.venv / 'bin' / 'comfyjobs'))} {args}"


def publish(remote: PyinfraRemote, host: FleetHost, folder: Path) -> tuple[str, bool]:
    """``catalog publish`` of the synced folders on ``host``; (the version, whether the fleet's active
    version changed: a new one, or an earlier one activated again)."""
    listed = remote.run(_comfyjobs(host, "catalog list --json"), step="catalog publish").output
    before = next((v["version"] for v in _json_list(listed) if v.get("active")), None)
    dirs = {"MANIFEST_DIR": folder / "manifests", "WORKFLOW_DIR": folder / "workflows"}
    env = "".join(f"{k}={shlex.quote(str(v))} " for k, v in dirs.items())
    ran = remote.run(_comfyjobs(host, "catalog publish", env), step="catalog publish", show=True)
    found = re.search(r"(?m)^([0-9a-f]{64}) (?:already )?published", ran.output)
    if found is None:
        raise FleetError(f"{host.name}: catalog publish said no version: {ran.output.strip()[-300:]}")
    return found.group(1), found.group(1) != before


def _json_list(text: str) -> list[dict[str, Any]]:
    start = text.find("[")
    try:
        found = json.loads(text[start:]) if start >= 0 else []
    except ValueError:
        return []
    return [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []


def nodes_state(remote: PyinfraRemote, host: FleetHost) -> str:
    """A digest of ComfyUI's custom_nodes folder: each node's folder and its commit."""
    nodes = shlex.quote(str(host.install_root / "ComfyUI" / "custom_nodes"))
    script = (
        f"cd {nodes} 2>/dev/null && for d in */; do printf '%s ' \"$d\";"
        ' git -C "$d" rev-parse HEAD 2>/dev/null || echo -; done | sha256sum | cut -c1-16 || echo none'
    )
    return remote.run(script, step="custom nodes").output.strip().splitlines()[-1]


def sync_gpu_host(remote: PyinfraRemote, host: FleetHost, folder: Path) -> tuple[StepLog, bool]:
    """Custom nodes and models on one GPU host; (its log, whether its custom nodes changed)."""
    log = StepLog(host.name)
    nodes, models = folder / "configs" / NODES_FILE, folder / "configs" / MODELS_FILE
    before = nodes_state(remote, host)
    if remote.run(f"{_has_entries(nodes)} && echo yes || true", step="custom nodes").output.strip() == "yes":
        remote.run(
            _comfyjobs(host, f"nodes install --file {shlex.quote(str(nodes))}"),
            step="custom nodes",
            show=True,
        )
    nodes_changed = nodes_state(remote, host) != before
    log.said("custom nodes", nodes_changed, NODES_FILE)
    if remote.run(f"{_has_entries(models)} && echo yes || true", step="models").output.strip() == "yes":
        ran = remote.run(
            _comfyjobs(host, f"models download --file {shlex.quote(str(models))}"), step="models", show=True
        )
        log.said("models (models.ini)", "downloaded" in ran.output.lower(), MODELS_FILE)
    ran = remote.run(_comfyjobs(host, "models download --catalog"), step="models of the catalog", show=True)
    log.said("models (catalog)", "downloaded" in ran.output.lower(), ran.output.strip().splitlines()[-1])
    return log, nodes_changed
