"""Copies of the shipped manifests and workflows to publish as catalog versions, and edits of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO


def copy_folders(where: Path) -> tuple[Path, Path]:
    """(manifest dir, workflow dir): copies of the shipped ones under ``where``."""
    manifests, workflows = where / "manifests", where / "workflows"
    shutil.copytree(REPO / "manifests", manifests)
    shutil.copytree(REPO / "workflows", workflows)
    return manifests, workflows


def edit_workflows(manifests: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = manifests / "workflows.yaml"
    data = yaml.safe_load(path.read_text())
    change(data["workflows"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def swap_tiny_size(workflows: dict[str, Any]) -> None:
    """tiny's `width` writes the image's height and `height` its width: a parameter moved to another
    input, which a worker patching from its own files would get wrong."""
    params = workflows["tiny"]["parameters"]
    params["width"]["targets"] = [{"title": "Image", "input": "height"}]
    params["height"]["targets"] = [{"title": "Image", "input": "width"}]
