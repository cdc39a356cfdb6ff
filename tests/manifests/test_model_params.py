"""`type: model` parameters (a file name in their folder, or a URL the worker downloads) and a
workflow's `models` list: what the loader accepts, what a request may give, and the graph built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyjobs.errors import FieldProblem, InvalidParamsError
from comfyjobs.manifests.params import resolve_params, validate_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Workflow

from .helpers import base_params, load, model_param, problems, write_manifests

SHA = "cd" * 32


def _model_params() -> dict[str, Any]:
    params = base_params()
    params["checkpoint"] = model_param()
    return params


@pytest.fixture
def wf(tmp_path: Path) -> Workflow:
    return load(write_manifests(tmp_path, params=_model_params())).workflow("w")


def _resolve(workflow: Workflow, **params: Any) -> dict[str, Any]:
    request = validate_params(workflow, {"prompt": "p", **params})
    return resolve_params(
        workflow, request, lambda folder: {"checkpoints": ["a.safetensors"]}.get(folder, [])
    )


def test_a_model_parameter_needs_its_folder(tmp_path: Path) -> None:
    params = _model_params()
    del params["checkpoint"]["folder"]
    root = write_manifests(tmp_path, params=params)
    assert any("needs `folder`" in reason for _file, _key, reason in problems(root))


def test_only_a_model_parameter_has_a_folder(tmp_path: Path) -> None:
    params = base_params()
    params["steps"]["folder"] = "checkpoints"
    root = write_manifests(tmp_path, params=params)
    assert any("only it has one" in reason for _file, _key, reason in problems(root))


def test_a_name_in_the_folder_a_url_or_a_url_with_its_sha256(wf: Workflow) -> None:
    assert _resolve(wf)["checkpoint"] == "a.safetensors"
    url = "https://huggingface.co/org/repo/resolve/main/m.safetensors"
    assert _resolve(wf, checkpoint=url)["checkpoint"] == url
    given = {"url": url, "sha256": SHA}
    assert _resolve(wf, checkpoint=given)["checkpoint"] == given


def test_a_name_not_in_the_folder_says_a_url_would_do(wf: Workflow) -> None:
    with pytest.raises(InvalidParamsError) as info:
        _resolve(wf, checkpoint="b.safetensors")
    assert info.value.problems == [
        FieldProblem(
            "params.checkpoint",
            "'b.safetensors' is not in the checkpoints folder or an http(s) URL (available: a.safetensors)",
        )
    ]


@pytest.mark.parametrize(
    "value", [{"url": "https://h/m.safetensors", "sha256": "nothex"}, {"sha256": SHA}, 5, ""]
)
def test_malformed_model_values_are_refused_at_validation(wf: Workflow, value: Any) -> None:
    with pytest.raises(InvalidParamsError) as info:
        validate_params(wf, {"prompt": "p", "checkpoint": value})
    assert [p.field for p in info.value.problems] == ["params.checkpoint"]


def test_the_graph_names_a_url_model_by_its_linked_name(wf: Workflow) -> None:
    values = _resolve(wf, checkpoint={"url": "https://h/x/m.safetensors", "sha256": SHA})
    graph = build_graph(wf, values, {})
    assert graph["1"]["inputs"]["ckpt_name"] == f"on-demand/{SHA[:16]}-m.safetensors"
    plain = build_graph(wf, _resolve(wf), {})
    assert plain["1"]["inputs"]["ckpt_name"] == "a.safetensors"


def test_a_workflow_lists_the_models_it_downloads(tmp_path: Path) -> None:
    names = base_params()
    models = [
        {"folder": "checkpoints", "name": "a.safetensors", "url": "https://h/a.safetensors", "sha256": SHA}
    ]
    workflow = {"template": "t.json", "parameters": dict.fromkeys(names), "models": models}
    registry = load(write_manifests(tmp_path, workflow=workflow))
    [listed] = registry.workflow("w").models
    assert (listed.folder, listed.name, listed.url, listed.sha256) == (
        "checkpoints",
        "a.safetensors",
        "https://h/a.safetensors",
        SHA,
    )
