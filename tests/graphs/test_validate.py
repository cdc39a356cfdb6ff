"""check_graph against a real ComfyUI 0.3.75 /object_info (recorded in tests/authoring/data), plus a few
node classes copied from ComfyUI's source in the same shape server.node_info gives them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from comfyjobs.graphs.validate import GRAPH, NodeProblem, check_graph, is_ui_format

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "authoring" / "data"
SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "heun", "dpmpp_2m", "ddim"]


def _v1(name: str, required: dict[str, Any], output: list[Any], **extra: Any) -> dict[str, Any]:
    """A V1 node as ComfyUI's server.node_info describes it."""
    inputs: dict[str, Any] = {"required": required, **extra.pop("inputs", {})}
    return {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": [t if isinstance(t, str) else "COMBO" for t in output],
        "name": name,
        "display_name": name,
        "description": "",
        "python_module": extra.pop("python_module", "nodes"),
        "category": extra.pop("category", "image"),
        "output_node": extra.pop("output_node", False),
    }


# From nodes.py / comfy_extras (MAX_RESOLUTION is 16384), as /object_info serialises them.
COPIED = {
    "ImageInvert": _v1("ImageInvert", {"image": ["IMAGE"]}, ["IMAGE"]),
    "ImageScale": _v1(
        "ImageScale",
        {
            "image": ["IMAGE"],
            "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
            "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
            "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
            "crop": [["disabled", "center"]],
        },
        ["IMAGE"],
        category="image/upscaling",
    ),
    "ImageCompositeMasked": _v1(
        "ImageCompositeMasked",
        {
            "destination": ["IMAGE"],
            "source": ["IMAGE"],
            "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
            "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
            "resize_source": ["BOOLEAN", {"default": False}],
        },
        ["IMAGE"],
        inputs={"optional": {"mask": ["MASK"]}},
        python_module="comfy_extras.nodes_mask",
    ),
    "PreviewAny": _v1(
        "PreviewAny",
        {"source": ["*", {}]},
        [],
        output_node=True,
        python_module="comfy_extras.nodes_preview_any",
        category="utils",
    ),
    # Custom-node styles: a list-typed output (old "selector" nodes return KSampler.SAMPLERS), a V3 Combo
    # output, and an input taking alternatives.
    "SamplerSelector": _v1("SamplerSelector", {}, [SAMPLERS], python_module="custom_nodes.x"),
    "SchedulerPicker": _v1("SchedulerPicker", {}, ["COMBO"], python_module="custom_nodes.x"),
    "ImageOrMaskStats": _v1(
        "ImageOrMaskStats", {"pixels": ["IMAGE,MASK"]}, ["FLOAT,INT"], python_module="custom_nodes.x"
    ),
}


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((DATA / "object_info_0.3.75.json").read_text(encoding="utf-8"))
    data = copy.deepcopy(recorded) | copy.deepcopy(COPIED)
    # The recording was made on a worker with no models and no input files; give it some, as a worker has.
    data["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = ["smoke-sd15.safetensors"]
    data["LoraLoader"]["input"]["required"]["lora_name"][0] = ["none.safetensors", "detail.safetensors"]
    data["LoadImage"]["input"]["required"]["image"][0] = ["example.png"]
    return data


def txt2img() -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "smoke-sd15.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 20,
                "cfg": 7,  # an int is a fine FLOAT
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "txt2img", "images": ["8", 0]}},
    }


def invert() -> dict[str, Any]:
    """LoadImage -> ImageInvert -> ImageScale -> SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["2", 0],
                "upscale_method": "bilinear",
                "width": 64,
                "height": 0,
                "crop": "center",
            },
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "inv"}},
    }


def reasons(problems: dict[str, list[NodeProblem]]) -> dict[str, list[tuple[str | None, str]]]:
    return {node: [(p.field, p.reason) for p in found] for node, found in problems.items()}


def test_valid_graphs_have_no_problems(info: dict[str, Any]) -> None:
    assert check_graph(txt2img(), info) == {}
    assert check_graph(invert(), info) == {}
    shipped = json.loads((REPO / "workflows" / "txt2img.json").read_text(encoding="utf-8"))
    assert check_graph(shipped, info) == {}


def test_not_a_graph(info: dict[str, Any]) -> None:
    not_graphs: list[Any] = [[], "x", None, [["1", {"class_type": "SaveImage", "inputs": {}}]]]
    for graph in not_graphs:
        assert reasons(check_graph(graph, info)) == {GRAPH: [(None, "not_a_graph")]}
    ui = json.loads((DATA / "txt2img_ui.json").read_text(encoding="utf-8"))
    problems = check_graph(ui, info)
    assert reasons(problems) == {GRAPH: [(None, "not_a_graph")]}
    assert "Export (API)" in problems[GRAPH][0].message


def test_empty_graph(info: dict[str, Any]) -> None:
    assert reasons(check_graph({}, info)) == {GRAPH: [(None, "empty_graph")]}


def test_not_a_node(info: dict[str, Any]) -> None:
    graph = invert()
    graph["10"] = "SaveImage"
    graph["11"] = {"class_type": 9, "inputs": {}}
    graph["12"] = {"class_type": "ImageInvert"}  # no inputs object
    graph["13"] = {"class_type": "ImageInvert", "inputs": [["2", 0]]}
    graph["2"]["inputs"]["image"] = ["10", 0]  # links to a broken node: reported there only
    assert reasons(check_graph(graph, info)) == {n: [(None, "not_a_node")] for n in ("10", "11", "12", "13")}


def test_unknown_class_type(info: dict[str, Any]) -> None:
    graph = invert()
    graph["2"]["class_type"] = "ImageInvertPlus"
    problems = check_graph(graph, info)
    assert reasons(problems) == {"2": [(None, "unknown_class_type")]}
    assert problems["2"][0].message.startswith("node 2 (ImageInvertPlus): ")


def test_an_unknown_class_might_be_the_output_so_no_outputs_is_not_claimed(info: dict[str, Any]) -> None:
    graph = invert()
    graph["4"]["class_type"] = "SaveImageWebsocket"
    assert reasons(check_graph(graph, info)) == {"4": [(None, "unknown_class_type")]}


def test_allow_and_deny(info: dict[str, Any]) -> None:
    allowed = {"LoadImage", "ImageScale", "SaveImage"}
    problems = check_graph(invert(), info, allow=allowed)
    assert reasons(problems) == {"2": [(None, "class_type_not_allowed")]}
    assert "RAW_WORKFLOW_NODE_ALLOWLIST" in problems["2"][0].message
    assert problems["2"][0].message.startswith("node 2 (ImageInvert): ")

    problems = check_graph(invert(), info, deny=["ImageScale", "KSampler"])
    assert reasons(problems) == {"3": [(None, "class_type_not_allowed")]}
    assert "RAW_WORKFLOW_NODE_DENYLIST" in problems["3"][0].message

    assert check_graph(invert(), info, allow=allowed | {"ImageInvert"}, deny=["KSampler"]) == {}
    # the policy covers nodes ComfyUI would not even run
    graph = invert() | {"9": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    assert set(check_graph(graph, info, allow=allowed)) == {"2", "9"}


def test_missing_required_input(info: dict[str, Any]) -> None:
    graph = txt2img()
    del graph["3"]["inputs"]["model"]
    del graph["9"]["inputs"]["filename_prefix"]
    problems = check_graph(graph, info)
    assert reasons(problems) == {
        "3": [("model", "missing_input")],
        "9": [("filename_prefix", "missing_input")],
    }
    assert problems["3"][0].message == "node 3 (KSampler): required input 'model' is missing"


def test_optional_inputs_are_checked_only_when_present(info: dict[str, Any]) -> None:
    graph = invert()
    graph["5"] = {
        "class_type": "ImageCompositeMasked",
        "inputs": {"destination": ["3", 0], "source": ["2", 0], "x": 0, "y": 0, "resize_source": False},
    }
    graph["4"]["inputs"]["images"] = ["5", 0]
    assert check_graph(graph, info) == {}
    graph["5"]["inputs"]["mask"] = ["1", 1]  # LoadImage's MASK output
    assert check_graph(graph, info) == {}
    graph["5"]["inputs"]["mask"] = ["1", 0]  # its IMAGE output
    assert reasons(check_graph(graph, info)) == {"5": [("mask", "type_mismatch")]}


def test_extra_and_hidden_inputs_are_ignored(info: dict[str, Any]) -> None:
    graph = txt2img()
    graph["3"]["inputs"]["not_an_input"] = "whatever"
    graph["9"]["inputs"]["prompt"] = 5  # hidden; ComfyUI fills it in
    assert check_graph(graph, info) == {}


@pytest.mark.parametrize(
    "link",
    [["40", 0], ["4", 3], ["4", -1], ["4"], ["4", 0, 1], [4, 0], ["4", 0.0], ["4", True], []],
)
def test_bad_link(info: dict[str, Any], link: list[Any]) -> None:
    graph = txt2img()
    graph["3"]["inputs"]["model"] = link
    problems = check_graph(graph, info)
    assert reasons(problems) == {"3": [("model", "bad_link")]}
    assert problems["3"][0].message.startswith("node 3 (KSampler): input 'model' ")


def test_type_mismatch(info: dict[str, Any]) -> None:
    graph = txt2img()
    graph["3"]["inputs"]["model"] = ["4", 1]  # CLIP
    graph["8"]["inputs"]["vae"] = ["4", 0]  # MODEL
    problems = check_graph(graph, info)
    assert reasons(problems) == {"8": [("vae", "type_mismatch")], "3": [("model", "type_mismatch")]}
    assert "MODEL" in problems["3"][0].message and "CLIP" in problems["3"][0].message


def test_star_and_alternative_types(info: dict[str, Any]) -> None:
    graph = invert()
    graph["5"] = {"class_type": "ImageOrMaskStats", "inputs": {"pixels": ["1", 1]}}  # MASK into IMAGE,MASK
    graph["6"] = {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}  # FLOAT,INT into *
    graph["7"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": ["5", 0], "height": 64, "batch_size": 1},
    }
    graph["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}}
    assert check_graph(graph, info) == {}
    graph["7"]["inputs"]["width"] = ["2", 0]  # IMAGE into INT
    graph["5"]["inputs"]["pixels"] = ["7", 0]  # LATENT into IMAGE,MASK
    assert reasons(check_graph(graph, info)) == {
        "5": [("pixels", "type_mismatch")],
        "7": [("width", "type_mismatch")],
    }


def test_combo_inputs_take_combo_and_list_outputs(info: dict[str, Any]) -> None:
    graph = txt2img()
    graph["20"] = {"class_type": "SamplerSelector", "inputs": {}}
    graph["21"] = {"class_type": "SchedulerPicker", "inputs": {}}
    graph["3"]["inputs"]["sampler_name"] = ["20", 0]
    graph["3"]["inputs"]["scheduler"] = ["21", 0]
    assert check_graph(graph, info) == {}
    graph["3"]["inputs"]["scheduler"] = ["5", 0]  # LATENT into a choice
    graph["6"]["inputs"]["text"] = ["20", 0]  # a choice into STRING: ComfyUI refuses that too
    assert reasons(check_graph(graph, info)) == {
        "3": [("scheduler", "type_mismatch")],
        "6": [("text", "type_mismatch")],
    }


def test_out_of_range(info: dict[str, Any]) -> None:
    graph = txt2img()
    graph["5"]["inputs"]["width"] = 8
    graph["3"]["inputs"]["cfg"] = 100.5
    graph["3"]["inputs"]["seed"] = 2**64
    problems = check_graph(graph, info)
    assert reasons(problems) == {
        "5": [("width", "out_of_range")],
        "3": [("seed", "out_of_range"), ("cfg", "out_of_range")],
    }
    assert problems["5"][0].message == "node 5 (EmptyLatentImage): input 'width' is 8, below the minimum 16"
    graph = txt2img()
    graph["3"]["inputs"]["seed"] = 2**64 - 1  # KSampler's real max
    assert check_graph(graph, info) == {}


@pytest.mark.parametrize(
    ("node", "field", "value"),
    [
        ("3", "steps", "20"),
        ("3", "steps", True),
        ("3", "steps", 20.0),
        ("3", "steps", 20.5),
        ("3", "cfg", "7"),
        ("3", "cfg", False),
        ("3", "cfg", float("nan")),
        ("6", "text", 5),
        ("6", "text", None),
        ("9", "filename_prefix", {"a": 1}),
    ],
)
def test_bad_value(info: dict[str, Any], node: str, field: str, value: Any) -> None:
    graph = txt2img()
    graph[node]["inputs"][field] = value
    assert reasons(check_graph(graph, info)) == {node: [(field, "bad_value")]}


def test_boolean_takes_only_booleans(info: dict[str, Any]) -> None:
    graph = invert()
    composite = {"destination": ["3", 0], "source": ["2", 0], "x": 0, "y": 0, "resize_source": "false"}
    graph["5"] = {"class_type": "ImageCompositeMasked", "inputs": composite}
    graph["4"]["inputs"]["images"] = ["5", 0]
    assert reasons(check_graph(graph, info)) == {"5": [("resize_source", "bad_value")]}
    composite["resize_source"] = 0
    assert reasons(check_graph(graph, info)) == {"5": [("resize_source", "bad_value")]}
    composite["resize_source"] = True
    assert check_graph(graph, info) == {}


def test_not_a_choice(info: dict[str, Any]) -> None:
    graph = txt2img()
    graph["3"]["inputs"]["sampler_name"] = "euler_a"
    graph["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    problems = check_graph(graph, info)
    assert reasons(problems) == {
        "4": [("ckpt_name", "not_a_choice")],
        "3": [("sampler_name", "not_a_choice")],
    }
    sampler = problems["3"][0].message
    assert sampler.startswith("node 3 (KSampler): input 'sampler_name' is 'euler_a'")
    assert "'euler'" in sampler and "more" in sampler and "'ddim'" not in sampler  # only the first few
    assert "'smoke-sd15.safetensors'" in problems["4"][0].message


def test_not_a_choice_with_nothing_to_choose(info: dict[str, Any]) -> None:
    graph = invert()
    graph["5"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}  # new-style, empty
    graph["6"] = {
        "class_type": "ImageUpscaleWithModel",
        "inputs": {"upscale_model": ["5", 0], "image": ["1", 0]},
    }
    graph["4"]["inputs"]["images"] = ["6", 0]
    problems = check_graph(graph, info)
    assert reasons(problems) == {"5": [("model_name", "not_a_choice")]}
    assert "no choices" in problems["5"][0].message


def test_new_style_combo(info: dict[str, Any]) -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "bogus"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    assert reasons(check_graph(graph, info)) == {"1": [("sampler_name", "not_a_choice")]}
    graph["1"]["inputs"]["sampler_name"] = "euler"
    assert check_graph(graph, info) == {}


def test_wrapped_literal_values_are_not_links(info: dict[str, Any]) -> None:
    graph = invert()
    graph["3"]["inputs"]["crop"] = {"__value__": "center"}
    assert check_graph(graph, info) == {}
    graph["3"]["inputs"]["crop"] = {"__value__": ["center"]}
    assert reasons(check_graph(graph, info)) == {"3": [("crop", "not_a_choice")]}


def test_staged_inputs_skip_the_choice_check(info: dict[str, Any]) -> None:
    graph = invert()
    graph["1"]["inputs"]["image"] = "upload-0001.png"
    assert reasons(check_graph(graph, info)) == {"1": [("image", "not_a_choice")]}
    assert check_graph(graph, info, staged=[("1", "image")]) == {}
    assert reasons(check_graph(graph, info, staged={("2", "image")})) == {"1": [("image", "not_a_choice")]}


def test_no_outputs(info: dict[str, Any]) -> None:
    graph = txt2img()
    del graph["9"]
    problems = check_graph(graph, info)
    assert reasons(problems) == {GRAPH: [(None, "no_outputs")]}
    # with no output node every node is checked, so the details still come back
    graph["5"]["inputs"]["width"] = 1
    assert reasons(check_graph(graph, info)) == {
        GRAPH: [(None, "no_outputs")],
        "5": [("width", "out_of_range")],
    }


def test_nodes_no_output_depends_on_are_not_input_checked(info: dict[str, Any]) -> None:
    """As in ComfyUI: a stray node with a stale file name does not stop the graph."""
    graph = txt2img()
    graph["30"] = {"class_type": "LoadImage", "inputs": {"image": "gone.png"}}
    graph["31"] = {"class_type": "ImageInvert", "inputs": {"image": ["30", 0]}}
    assert check_graph(graph, info) == {}
    graph["9"]["inputs"]["images"] = ["31", 0]
    assert reasons(check_graph(graph, info)) == {"30": [("image", "not_a_choice")]}


def test_several_problems_on_one_node_keep_input_order(info: dict[str, Any]) -> None:
    graph = txt2img()
    graph["3"]["inputs"].update(steps=0, cfg="high", scheduler="fast")
    del graph["3"]["inputs"]["latent_image"]
    assert reasons(check_graph(graph, info)) == {
        "3": [
            ("steps", "out_of_range"),
            ("cfg", "bad_value"),
            ("scheduler", "not_a_choice"),
            ("latent_image", "missing_input"),
        ]
    }


def test_is_ui_format() -> None:
    ui = json.loads((DATA / "txt2img_ui.json").read_text(encoding="utf-8"))
    assert is_ui_format(ui)
    assert is_ui_format({"last_node_id": 1, "last_link_id": 0, "nodes": [], "links": [], "version": 0.4})
    assert not is_ui_format(txt2img())
    assert not is_ui_format(json.loads((REPO / "workflows" / "txt2img.json").read_text(encoding="utf-8")))
    assert not is_ui_format({"nodes": {"class_type": "X", "inputs": {}}, "links": []})
    assert not is_ui_format({"nodes": [], "links": {}})
    assert not is_ui_format([{"nodes": [], "links": []}])
    assert not is_ui_format(None)
