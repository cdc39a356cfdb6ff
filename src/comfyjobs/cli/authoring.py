"""`comfyjobs deps FILE` and `comfyjobs import FILE --id NAME`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comfyjobs.authoring.deps import format_deps, workflow_deps
from comfyjobs.authoring.importer import import_workflow
from comfyjobs.authoring.ui_format import is_ui_format
from comfyjobs.cli import exit_codes
from comfyjobs.cli.doctor import comfyui_for_cli
from comfyjobs.comfy.client import ComfyClient
from comfyjobs.errors import WorkflowImportError
from comfyjobs.manifests.loader import load_template
from comfyjobs.settings import Settings


def run_deps(path: Path) -> int:
    try:
        graph = load_template(path)
    except ValueError as exc:
        raise WorkflowImportError(f"{path}: {exc}") from None
    print(format_deps(workflow_deps(graph)))
    return exit_codes.OK


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowImportError(f"cannot read {path}: {exc}") from None


def run_import(
    settings: Settings, path: Path, workflow_id: str, *, comfyui_url: str | None, overwrite: bool
) -> int:
    object_info = None
    if is_ui_format(_read_json(path)):  # only the UI format needs ComfyUI, to name widget values
        with comfyui_for_cli(settings, comfyui_url) as base_url:
            client = ComfyClient(base_url)
            try:
                object_info = client.object_info()
            finally:
                client.close()
    result = import_workflow(
        path,
        workflow_id,
        manifest_dir=settings.manifest_dir,
        workflow_dir=settings.workflow_dir,
        object_info=object_info,
        overwrite=overwrite,
    )
    print(f"wrote {result.template_path} ({result.source_format} export) and manifest entries:")
    for param in result.parameters:
        targets = ", ".join(f"{node}.{inp}" for node, inp in param.targets)
        print(f"  {param.name:<20} {'new' if param.created else 'reused':<7} → {targets}")
    print("Edit manifests/ to taste, then: comfyjobs check")
    return exit_codes.OK
