"""A catalog version's bundle: content-addressed, and the registry it gives is the folders' own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from comfyjobs.catalog.bundle import Bundle, read_bundle
from comfyjobs.errors import CatalogError, ManifestError
from comfyjobs.manifests.loader import load_registry
from tests.catalog.folders import copy_folders, edit_workflows, swap_tiny_size
from tests.conftest import REPO


def test_the_version_is_the_sha256_of_the_bundle_and_follows_the_content(tmp_path: Path) -> None:
    bundle, _ = read_bundle(REPO / "manifests", REPO / "workflows")
    assert bundle.version == hashlib.sha256(bundle.to_bytes()).hexdigest()
    again, _ = read_bundle(REPO / "manifests", REPO / "workflows")
    assert again.version == bundle.version

    manifests, workflows = copy_folders(tmp_path)
    edit_workflows(manifests, swap_tiny_size)
    changed, _ = read_bundle(manifests, workflows)
    assert changed.version != bundle.version


def test_the_bundle_gives_the_registry_of_its_folders(tmp_path: Path) -> None:
    bundle, registry = read_bundle(REPO / "manifests", REPO / "workflows")
    stored = Bundle.from_bytes(bundle.to_bytes(), bundle.version).registry()
    local = load_registry(REPO / "manifests", REPO / "workflows")
    assert list(stored.workflows) == list(local.workflows) == list(registry.workflows)
    for workflow_id, workflow in local.workflows.items():
        other = stored.workflows[workflow_id]
        assert list(other.parameters) == list(workflow.parameters)  # the order parameters are shown in
        assert other.parameters == workflow.parameters
        assert other.template == workflow.template
        assert other.request_model.model_json_schema() == workflow.request_model.model_json_schema()
    assert stored.loras == local.loras


def test_only_the_templates_a_workflow_names_are_published(tmp_path: Path) -> None:
    manifests, workflows = copy_folders(tmp_path)
    (workflows / "draft.json").write_text(json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    bundle, registry = read_bundle(manifests, workflows)
    assert "draft.json" not in bundle.templates
    assert set(bundle.templates) == {w.template_file for w in registry.workflows.values()}


def test_a_bundle_that_fails_check_is_refused_with_every_problem(tmp_path: Path) -> None:
    manifests, workflows = copy_folders(tmp_path)

    def break_two(wfs: dict[str, object]) -> None:
        tiny = wfs["tiny"]
        assert isinstance(tiny, dict)
        tiny["parameters"]["width"]["targets"] = [{"title": "Image", "input": "widht"}]
        tiny["template"] = "tiny.json"
        wfs["upscale"]["template"] = "missing.json"  # type: ignore[index]

    edit_workflows(manifests, break_two)
    with pytest.raises(ManifestError) as caught:
        read_bundle(manifests, workflows)
    reasons = [p.reason for p in caught.value.problems]
    assert any("has no input 'widht'" in r for r in reasons)
    assert any("template file not found" in r for r in reasons)


def test_stored_bytes_that_are_not_the_version_are_refused() -> None:
    bundle, _ = read_bundle(REPO / "manifests", REPO / "workflows")
    tampered = bundle.to_bytes().replace(b'"default":64', b'"default":65', 1)
    assert tampered != bundle.to_bytes()
    with pytest.raises(CatalogError, match="do not match"):
        Bundle.from_bytes(tampered, bundle.version)
