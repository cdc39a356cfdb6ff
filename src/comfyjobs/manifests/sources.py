"""Where the loader reads the manifests and templates from: two folders (``DirSources``, what
``comfyjobs check`` and ``catalog publish`` read), or the parsed data of a published catalog version
(``DataSources``, what the API and the workers run). The loader sees parsed YAML and JSON only, so a
registry built from a catalog version is the one its folders gave when it was published.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

BASE_FILE = "base.yaml"
WORKFLOWS_FILE = "workflows.yaml"
LORAS_FILE = "loras.yaml"
MANIFEST_FILES = (BASE_FILE, WORKFLOWS_FILE, LORAS_FILE)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""A manifest file that is not there (loras.yaml may be absent)."""


class SourceError(Exception):
    """A file that is there but cannot be read or parsed; ``reason`` says why, for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sources(Protocol):
    def manifest_label(self, name: str) -> str:
        """How problems name manifest file ``name`` (a path, or a file of a catalog version)."""

    def manifest(self, name: str) -> Any:
        """The parsed YAML of manifest file ``name``, or MISSING; raises SourceError."""

    def template(self, name: str) -> Any:
        """The parsed JSON of template ``name``; raises ValueError saying why it cannot be had."""


def read_template_file(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"template file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"template cannot be read: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"template is not valid JSON: {exc}") from None


def check_template(data: Any) -> dict[str, Any]:
    """An API-format workflow, or ValueError with a reason a person can act on."""
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise ValueError("template is a UI-format export; export it with 'Export (API)' in ComfyUI")
    if not isinstance(data, dict) or not data:
        raise ValueError("template must be a JSON object of node id -> node (ComfyUI API format)")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ValueError(f"node {node_id!r} has no class_type (ComfyUI API format expected)")
        if not isinstance(node.get("inputs", {}), dict):
            raise ValueError(f"node {node_id!r}: inputs must be an object")
    return data


class DirSources:
    """The files of ``manifest_dir`` and ``workflow_dir``. Keeps what it read (``read_manifests``,
    ``read_templates``), so that a registry built from them can be published as exactly that data."""

    def __init__(self, manifest_dir: Path, workflow_dir: Path) -> None:
        self.manifest_dir = manifest_dir
        self.workflow_dir = workflow_dir
        self.read_manifests: dict[str, Any] = {}
        self.read_templates: dict[str, Any] = {}

    def manifest_label(self, name: str) -> str:
        return str(self.manifest_dir / name)

    def manifest(self, name: str) -> Any:
        path = self.manifest_dir / name
        if not path.is_file():
            return MISSING
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SourceError(f"not valid YAML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot be read: {exc}") from None
        self.read_manifests[name] = data
        return data

    def template(self, name: str) -> Any:
        data = read_template_file(self.workflow_dir / name)
        self.read_templates[name] = data
        return data


class DataSources:
    """The parsed files of a catalog version (see comfyjobs.catalog.bundle), named ``label``/file."""

    def __init__(self, label: str, manifests: dict[str, Any], templates: dict[str, Any]) -> None:
        self._label = label
        self._manifests = manifests
        self._templates = templates

    def manifest_label(self, name: str) -> str:
        return f"{self._label}/{name}"

    def manifest(self, name: str) -> Any:
        return self._manifests.get(name, MISSING)

    def template(self, name: str) -> Any:
        if name not in self._templates:
            raise ValueError(f"template file not found: {self._label}/{name}")
        return self._templates[name]
