"""A catalog version: the manifests and the workflow templates they name, as one immutable bundle.

The bundle is the parsed YAML of the three manifest files and the parsed JSON of each template a
workflow names, encoded as compact JSON (key order kept: it is the order parameters are shown in). Its
version is the sha256 of those bytes, so a version names exactly one content, anyone holding the bytes can
check them, and publishing the same folders twice gives the same version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from comfyjobs.errors import CatalogError, ManifestError, ManifestProblem
from comfyjobs.manifests.loader import build_registry
from comfyjobs.manifests.registry import Registry
from comfyjobs.manifests.sources import MANIFEST_FILES, DataSources, DirSources

BUNDLE_FORMAT = 1
SHORT = 12  # hex digits of a version shown to people (and enough to name one on the command line)


def short(version: str) -> str:
    return version[:SHORT]


@dataclass(frozen=True)
class Bundle:
    manifests: dict[str, Any]  # file name (base.yaml, workflows.yaml, loras.yaml) -> its parsed YAML
    templates: dict[str, Any]  # template file name -> its parsed JSON (ComfyUI API format)

    def to_bytes(self) -> bytes:
        return self._bytes

    @cached_property
    def _bytes(self) -> bytes:  # (made once: a publish needs them, their digest and a check that they can be)
        data = {"format": BUNDLE_FORMAT, "manifests": self.manifests, "templates": self.templates}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    @cached_property
    def version(self) -> str:
        return hashlib.sha256(self._bytes).hexdigest()

    def registry(self, label: str | None = None) -> Registry:
        """Built and checked as `comfyjobs check` does (ManifestError naming ``label``/file)."""
        name = label or f"catalog {short(self.version)}"
        return build_registry(DataSources(name, self.manifests, self.templates))

    @classmethod
    def from_bytes(cls, raw: bytes, version: str) -> Bundle:
        """The bundle stored as ``version``; CatalogError if the bytes are not that version's, or not a
        bundle this release reads."""
        if hashlib.sha256(raw).hexdigest() != version:
            raise CatalogError(f"catalog {short(version)}: stored bytes do not match the version's sha256")
        data = json.loads(raw)
        if (
            not isinstance(data, dict)
            or data.get("format") != BUNDLE_FORMAT
            or not isinstance(data.get("manifests"), dict)
            or not isinstance(data.get("templates"), dict)
        ):
            raise CatalogError(f"catalog {short(version)}: not a bundle of format {BUNDLE_FORMAT}")
        return cls(manifests=data["manifests"], templates=data["templates"])


def read_bundle(manifest_dir: Path, workflow_dir: Path) -> tuple[Bundle, Registry]:
    """The bundle of these folders and its registry; ManifestError (all problems) unless they pass
    ``comfyjobs check``. Templates no workflow names are not part of it."""
    sources = DirSources(manifest_dir, workflow_dir)
    registry = build_registry(sources)
    manifests = {
        name: sources.read_manifests[name] for name in MANIFEST_FILES if name in sources.read_manifests
    }
    templates = {name: sources.read_templates[name] for name in sorted(sources.read_templates)}
    bundle = Bundle(manifests=manifests, templates=templates)
    try:
        bundle.to_bytes()
    except (TypeError, ValueError) as exc:  # YAML that JSON cannot hold (dates, NaN): said, not guessed
        problem = ManifestProblem(file=str(manifest_dir), key="(file)", reason=f"cannot be published: {exc}")
        raise ManifestError([problem]) from None
    return bundle, registry
