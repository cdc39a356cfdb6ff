"""build_graph (copying, targets, fixed values, LoRA bypass and prompt words) and apply_lora_prompt."""

from __future__ import annotations

import copy
import secrets
from pathlib import Path
from typing import Any

import pytest

from comfyjobs.errors import FieldProblem, InvalidParamsError
from comfyjobs.manifests.params import resolve_params, validate_params
from comfyjobs.manifests.patching import apply_lora_prompt, build_graph
from comfyjobs.manifests.registry import Registry
from comfyjobs.manifests.schema import LoraSpec

from .helpers import base_params, load, load_shipped, load_workflow, template, write_manifests

PIXEL = "example-pixel-art.safetensors"  # in the shipped loras.yaml


@pytest.fixture(scope="module")
def shipped() -> Registry:
    return load_shipped()


def _txt2img_params(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 12,
        "cfg": 5.5,
        "sampler": "heun",
        "scheduler": "karras",
        "width": 640,
        "height": 384,
        "batch_size": 2,
        "checkpoint": "other.safetensors",
        "lora": None,
        "lora_strength": 0.5,
    }
    values.update(changes)
    return values


def _links_to(graph: dict[str, Any], node_id: str) -> list[tuple[str, str]]:
    return [
        (nid, name)
        for nid, node in graph.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list) and len(value) == 2 and value[0] == node_id
    ]


# --- copying ----------------------------------------------------------------------------------------------


def test_build_graph_leaves_the_template_unchanged(shipped: Registry) -> None:
    wf = shipped.workflow("txt2img")
    before = copy.deepcopy(dict(wf.template))
    graph = build_graph(wf, _txt2img_params(lora=None), shipped.loras)  # bypass rewires links too
    assert dict(wf.template) == before
    graph["3"]["inputs"]["positive"][0] = "changed"
    graph["3"]["inputs"]["steps"] = -1
    graph["6"]["_meta"]["title"] = "changed"
    assert dict(wf.template) == before
    assert graph["3"] is not wf.template["3"]
    assert graph["3"]["inputs"] is not wf.template["3"]["inputs"]
    # a second build starts from the pristine template again
    assert build_graph(wf, _txt2img_params(lora=PIXEL), shipped.loras)["10"] == {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": PIXEL,
            "strength_model": 0.5,
            "strength_clip": 0.5,
        },
        "_meta": {"title": "LoRA"},
    }
    assert dict(wf.template) == before


def test_bypassed_links_are_copies(tmp_path: Path) -> None:
    wf = load(write_manifests(tmp_path)).workflow("w")
    graph = build_graph(wf, _fixture_params(), {})
    graph["4"]["inputs"]["model"][1] = 9
    assert graph["3"]["inputs"]["clip"] == ["1", 1]
    assert wf.template["2"]["inputs"]["model"] == ["1", 0]


# --- targets ----------------------------------------------------------------------------------------------


def test_every_target_is_written(shipped: Registry) -> None:
    graph = build_graph(shipped.workflow("txt2img"), _txt2img_params(lora="mine.safetensors"), shipped.loras)
    assert graph["3"]["inputs"] == {
        "seed": 42,
        "steps": 12,
        "cfg": 5.5,
        "sampler_name": "heun",
        "scheduler": "karras",
        "denoise": 1.0,
        "model": ["10", 0],
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    assert graph["5"]["inputs"] == {"width": 640, "height": 384, "batch_size": 2}
    assert graph["4"]["inputs"] == {"ckpt_name": "other.safetensors"}
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["7"]["inputs"]["text"] == "blurry"
    assert graph["9"] == shipped.workflow("txt2img").template["9"]


def test_multi_target_parameter_writes_every_target(shipped: Registry) -> None:
    graph = build_graph(
        shipped.workflow("txt2img"),
        _txt2img_params(lora="mine.safetensors", lora_strength=-1.25),
        shipped.loras,
    )
    assert graph["10"]["inputs"]["strength_model"] == -1.25
    assert graph["10"]["inputs"]["strength_clip"] == -1.25
    assert graph["10"]["inputs"]["lora_name"] == "mine.safetensors"


def test_tiny_graph(shipped: Registry) -> None:
    graph = build_graph(
        shipped.workflow("tiny"), {"width": 8, "height": 16, "batch_size": 3, "color": 255}, {}
    )
    assert graph == {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 16, "batch_size": 3, "color": 255},
            "_meta": {"title": "Image"},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "tiny", "images": ["1", 0]},
            "_meta": {"title": "Save"},
        },
    }


def test_fixed_values_are_written(tmp_path: Path) -> None:
    parameters = {"steps": {"value": 7}, "sampler": {"value": "heun"}, "cfg": None}
    wf = load_workflow(tmp_path, parameters)
    graph = build_graph(wf, {"cfg": 2.0}, {})
    assert graph["4"]["inputs"]["steps"] == 7
    assert graph["4"]["inputs"]["sampler_name"] == "heun"
    assert graph["4"]["inputs"]["cfg"] == 2.0
    # a fixed value wins even over a (never validated) request value of the same name
    assert build_graph(wf, {"cfg": 2.0, "steps": 99}, {})["4"]["inputs"]["steps"] == 7


def test_missing_parameters_are_reported(shipped: Registry) -> None:
    params = _txt2img_params()
    del params["prompt"]
    del params["seed"]
    with pytest.raises(InvalidParamsError) as info:
        build_graph(shipped.workflow("txt2img"), params, shipped.loras)
    assert info.value.problems == [
        FieldProblem("params.prompt", "missing"),
        FieldProblem("params.seed", "missing"),
    ]


def test_fixed_parameters_are_not_missing(tmp_path: Path) -> None:
    wf = load(
        write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"value": 3}}})
    ).workflow("w")
    assert build_graph(wf, {}, {})["4"]["inputs"]["steps"] == 3


# --- LoRA bypass ------------------------------------------------------------------------------------------


def test_null_lora_removes_the_loader_and_rewires(shipped: Registry) -> None:
    graph = build_graph(shipped.workflow("txt2img"), _txt2img_params(lora=None), shipped.loras)
    assert "10" not in graph
    assert graph["3"]["inputs"]["model"] == ["4", 0]
    assert graph["6"]["inputs"]["clip"] == ["4", 1]
    assert graph["7"]["inputs"]["clip"] == ["4", 1]
    assert _links_to(graph, "10") == []
    assert graph["8"]["inputs"]["vae"] == ["4", 2]  # links to other nodes untouched
    assert set(graph) == {"3", "4", "5", "6", "7", "8", "9"}


def test_set_lora_keeps_the_loader(shipped: Registry) -> None:
    graph = build_graph(shipped.workflow("txt2img"), _txt2img_params(lora="mine.safetensors"), shipped.loras)
    assert sorted(_links_to(graph, "10")) == [("3", "model"), ("6", "clip"), ("7", "clip")]


def _fixture_params(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "prompt": "p",
        "seed": 1,
        "steps": 2,
        "cfg": 3.0,
        "sampler": "euler",
        "tiled": True,
        "checkpoint": "a.safetensors",
        "lora": None,
        "lora_strength": 1.0,
    }
    values.update(changes)
    return values


def test_bypass_of_an_output_with_no_passthrough_input_fails(tmp_path: Path) -> None:
    tpl = template()
    tpl["7"] = {"class_type": "Use", "inputs": {"x": ["2", 2]}, "_meta": {"title": "Use"}}
    wf = load(write_manifests(tmp_path, templates={"t.json": tpl})).workflow("w")
    with pytest.raises(
        ValueError, match=r"node 2: output 2 is used but bypass_when_null names only 2 inputs"
    ):
        build_graph(wf, _fixture_params(), {})


def test_bypass_of_a_node_targeted_twice(tmp_path: Path) -> None:
    params = base_params()
    params["lora"]["targets"].append({"node": "2", "input": "strength_model", "bypass_when_null": ["model"]})
    wf = load(write_manifests(tmp_path, params=params)).workflow("w")
    graph = build_graph(wf, _fixture_params(), {})
    assert "2" not in graph
    assert graph["4"]["inputs"]["model"] == ["1", 0]
    assert graph["3"]["inputs"]["clip"] == ["1", 1]


# --- LoRA prompt words ------------------------------------------------------------------------------------


def test_listed_lora_wraps_the_prompt(shipped: Registry) -> None:
    graph = build_graph(shipped.workflow("txt2img"), _txt2img_params(lora=PIXEL), shipped.loras)
    # loras.yaml: prompt_prefix "pixel art,", prompt_suffix "16-bit palette"
    assert graph["6"]["inputs"]["text"] == "pixel art, a red fox, 16-bit palette"
    assert graph["7"]["inputs"]["text"] == "blurry"  # only the prompt parameter
    assert graph["10"]["inputs"]["lora_name"] == PIXEL


def test_unlisted_lora_leaves_the_prompt(shipped: Registry) -> None:
    graph = build_graph(
        shipped.workflow("txt2img"), _txt2img_params(lora="unlisted.safetensors"), shipped.loras
    )
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["10"]["inputs"]["lora_name"] == "unlisted.safetensors"


def test_no_lora_leaves_the_prompt(shipped: Registry) -> None:
    graph = build_graph(shipped.workflow("txt2img"), _txt2img_params(lora=None), shipped.loras)
    assert graph["6"]["inputs"]["text"] == "a red fox"


def test_lora_words_go_to_the_named_prompt_parameter(tmp_path: Path) -> None:
    params = base_params()
    params["style"] = {
        "type": "string",
        "default": "",
        "targets": [{"node": "5", "input": "filename_prefix"}],
    }
    workflow = {
        "template": "t.json",
        "parameters": {"prompt": None, "style": None, "lora": None},
        "prompt_parameter": "style",
    }
    registry = load(write_manifests(tmp_path, params=params, workflow=workflow))
    loras = {"x": LoraSpec(prompt_prefix="pre", prompt_suffix="post")}
    graph = build_graph(registry.workflow("w"), {"prompt": "p", "style": "s", "lora": "x"}, loras)
    assert graph["5"]["inputs"]["filename_prefix"] == "pre, s, post"
    assert graph["3"]["inputs"]["text"] == "p"


def test_no_prompt_parameter_means_no_lora_words(tmp_path: Path) -> None:
    workflow = {"template": "t.json", "parameters": {"steps": None, "lora": None}}
    wf = load(write_manifests(tmp_path, workflow=workflow)).workflow("w")
    assert wf.prompt_parameter is None
    graph = build_graph(wf, {"steps": 3, "lora": "x"}, {"x": LoraSpec(prompt_prefix="pre")})
    assert graph["3"]["inputs"]["text"] == ""


def test_request_to_graph_end_to_end(shipped: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbelow", lambda n: 77)
    wf = shipped.workflow("txt2img")
    request = validate_params(wf, {"prompt": "a cat", "lora": PIXEL, "steps": "8"})
    values = resolve_params(
        wf, request, lambda folder: {"checkpoints": ["smoke-sd15.safetensors"]}.get(folder, [PIXEL])
    )
    graph = build_graph(wf, values, shipped.loras)
    assert graph["3"]["inputs"]["seed"] == 77
    assert graph["3"]["inputs"]["steps"] == 8
    assert graph["6"]["inputs"]["text"] == "pixel art, a cat, 16-bit palette"
    assert graph["4"]["inputs"]["ckpt_name"] == "smoke-sd15.safetensors"


# --- apply_lora_prompt ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "prompt", "suffix", "expected"),
    [
        ("pixel art,", "a fox", "16-bit palette", "pixel art, a fox, 16-bit palette"),
        ("pixel art, ", "a fox,", "", "pixel art, a fox"),
        ("pixel art", "a fox", "", "pixel art, a fox"),
        ("", "a fox", "hd", "a fox, hd"),
        ("", "a fox", "", "a fox"),
        ("style,", "", "", "style"),
        ("style", "  ", " , ", "style"),
        ("a,,", "b ,", "c,", "a, b, c"),
        ("  a  ", " b ", " c ", "a, b, c"),
    ],
)
def test_apply_lora_prompt(prefix: str, prompt: str, suffix: str, expected: str) -> None:
    result = apply_lora_prompt(prompt, LoraSpec(prompt_prefix=prefix, prompt_suffix=suffix))
    assert result == expected
    assert ",," not in result.replace(" ", "")


@pytest.mark.parametrize(
    ("prompt", "suffix"), [("a fox", ", 16-bit"), (", a fox", "16-bit")], ids=["suffix", "prompt"]
)
def test_apply_lora_prompt_leading_comma(prompt: str, suffix: str) -> None:
    assert apply_lora_prompt(prompt, LoraSpec(prompt_prefix="pixel art,", prompt_suffix=suffix)) == (
        "pixel art, a fox, 16-bit"
    )
