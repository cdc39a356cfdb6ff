"""`comfyjobs doctor`: can every public workflow run? Asks a running ComfyUI, or starts one to ask."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from comfyjobs.cli import exit_codes
from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.doctor import WorkflowAvailability, check_registry
from comfyjobs.comfy.process import ComfyInstance, ComfyProcess, default_python
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings

# The throwaway ComfyUI doctor starts sits above every worker's port (COMFYUI_BASE_PORT + GPU index).
DOCTOR_PORT_OFFSET = 100


@contextlib.contextmanager
def comfyui_for_cli(settings: Settings, url: str | None) -> Iterator[str]:
    """The given ComfyUI, or a throwaway one on CPU for the duration of a command."""
    if url:
        yield url
        return
    instance = ComfyInstance(
        comfyui_dir=settings.comfyui_dir,
        python=settings.comfyui_python or default_python(),
        port=settings.comfyui_base_port + DOCTOR_PORT_OFFSET,
        instance_dir=settings.comfy_instances_dir / "doctor",
        model_dir=settings.model_dir,
        gpu=None,  # reading /object_info needs no GPU
        extra_args=tuple(settings.comfyui_extra_args.split()),
    )
    comfy = ComfyProcess(
        instance,
        start_timeout_s=settings.comfyui_start_timeout_s,
        stop_timeout_s=settings.comfyui_stop_timeout_s,
    )
    try:
        comfy.start()
        comfy.wait_ready()
        yield comfy.base_url
    finally:
        comfy.close()


def _table(results: dict[str, WorkflowAvailability]) -> Table:
    table = Table(title="Workflows on this ComfyUI")
    for column in ("workflow", "status", "missing nodes", "missing models", "problems"):
        table.add_column(column, overflow="fold")
    for workflow_id, found in results.items():
        table.add_row(
            workflow_id,
            "[green]ready[/]" if found.ready else "[red]not ready[/]",
            "\n".join(found.missing_nodes),
            "\n".join(found.missing_models),
            "\n".join(found.problems),
        )
    return table


def run_doctor(settings: Settings, *, comfyui_url: str | None, as_json: bool) -> int:
    registry = load_registry(settings.manifest_dir, settings.workflow_dir)
    with comfyui_for_cli(settings, comfyui_url) as base_url:
        client = ComfyClient(base_url)
        try:
            object_info: dict[str, Any] = client.object_info()
        finally:
            client.close()
    results = check_registry(registry, object_info)
    console = Console()
    if as_json:
        console.print_json(data={k: v.model_dump() for k, v in results.items()})
    else:
        console.print(_table(results))
    return exit_codes.OK if all(r.ready for r in results.values()) else exit_codes.NOT_READY
