"""`catalog diff`: what a request would meet differently between two versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyjobs.catalog.bundle import read_bundle
from comfyjobs.catalog.diff import diff
from tests.catalog.folders import copy_folders, edit_workflows, swap_tiny_size
from tests.conftest import REPO


def _changed(tmp_path: Path, change: Any) -> list[str]:
    _, before = read_bundle(REPO / "manifests", REPO / "workflows")
    manifests, workflows = copy_folders(tmp_path)
    edit_workflows(manifests, change)
    _, after = read_bundle(manifests, workflows)
    return [c.line() for c in diff(before, after)]


def test_the_same_folders_differ_in_nothing() -> None:
    _, a = read_bundle(REPO / "manifests", REPO / "workflows")
    _, b = read_bundle(REPO / "manifests", REPO / "workflows")
    assert diff(a, b) == []


def test_a_parameter_moved_to_another_input_is_shown_as_such(tmp_path: Path) -> None:
    assert sorted(_changed(tmp_path, swap_tiny_size)) == sorted(
        [
            "- tiny: input width -> node 1 (EmptyImage).width",
            "+ tiny: input width -> node 1 (EmptyImage).height",
            "- tiny: input height -> node 1 (EmptyImage).height",
            "+ tiny: input height -> node 1 (EmptyImage).width",
        ]
    )


def test_parameters_and_workflows_added_removed_and_changed(tmp_path: Path) -> None:
    def change(workflows: dict[str, Any]) -> None:
        params = workflows["tiny"]["parameters"]
        params["width"]["default"] = 32
        params["width"]["max"] = 512
        del params["color"]
        workflows["tiny2"] = {"template": "tiny.json", "parameters": {"color": None}}
        del workflows["upscale"]

    lines = _changed(tmp_path, change)
    assert "~ tiny: parameter width.default: 64 -> 32" in lines
    assert "~ tiny: parameter width.max: 2048 -> 512" in lines
    assert "- tiny: parameter color (integer)" in lines
    assert "- tiny: input color -> node 1 (EmptyImage).color" in lines
    assert "+ tiny2: workflow" in lines
    assert "+ tiny2: parameter color (integer)" in lines
    assert "- upscale: workflow" in lines
