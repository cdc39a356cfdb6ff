"""UI-format → API-format conversion against a real /object_info.

``data/object_info_0.3.75.json`` is the /object_info of a real ComfyUI 0.3.75 (started with ``--cpu``, no
models installed, so model lists are empty), trimmed to the node classes these tests use.
``data/txt2img_ui.json`` is the graph of ``workflows/txt2img.json`` as the frontend saves it, plus what only
the editor has: a Reroute, a PrimitiveNode driving the sampler's steps, a muted preview, a note, a group.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from comfyjobs.authoring.ui_format import is_ui_format, ui_to_api, widget_layout
from comfyjobs.errors import WorkflowImportError

DATA = Path(__file__).resolve().parent / "data"
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    data: dict[str, Any] = _json(DATA / "object_info_0.3.75.json")
    return data


@pytest.fixture
def ui() -> dict[str, Any]:
    data: dict[str, Any] = _json(DATA / "txt2img_ui.json")
    return data


def _node(ui: dict[str, Any], node_id: int) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in ui["nodes"] if n["id"] == node_id)
    return node


def _ui_graph(*nodes: dict[str, Any], links: list[list[Any]] | None = None) -> dict[str, Any]:
    return {"nodes": list(nodes), "links": links or [], "version": 0.4}


# --- the txt2img export -------------------------------------------------------------------------------


def test_txt2img_export_converts_to_the_shipped_template(
    ui: dict[str, Any], object_info: dict[str, Any]
) -> None:
    assert is_ui_format(ui) and not is_ui_format(_json(WORKFLOWS / "txt2img.json"))
    graph = ui_to_api(ui, object_info)
    assert graph == _json(WORKFLOWS / "txt2img.json")  # class types, inputs, links and titles
    # The reroute, the primitive, the note and the muted preview are gone; the VAE comes from the loader.
    assert set(graph) == {"3", "4", "5", "6", "7", "8", "9", "10"}
    assert graph["8"]["inputs"]["vae"] == ["4", 2]


def test_object_info_marks_seeds_with_control_after_generate(object_info: dict[str, Any]) -> None:
    # What the layout relies on, as ComfyUI 0.3.75 says it (nodes.py and comfy_api's io.Int.Input).
    assert object_info["KSampler"]["input"]["required"]["seed"][1]["control_after_generate"] is True
    assert object_info["RandomNoise"]["input"]["required"]["noise_seed"][1]["control_after_generate"] is True
    assert object_info["KSampler"]["input_order"]["required"][:3] == ["model", "seed", "steps"]


def test_widget_layouts(object_info: dict[str, Any]) -> None:
    def names(class_type: str) -> list[str | None]:
        return [s.name for s in widget_layout(class_type, object_info[class_type]) if not s.force_input]

    assert names("KSampler") == [
        "seed",
        None,  # control_after_generate
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
    ]
    assert names("KSamplerAdvanced") == [
        "add_noise",
        "noise_seed",
        None,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ]
    assert names("BasicScheduler") == ["scheduler", "steps", "denoise"]  # COMBO in its dict form
    assert names("LoadImageMask") == ["image", "channel", None]  # the upload button after the required inputs
    assert names("PrimitiveInt") == ["value", None]
    assert names("VAEDecode") == []


def test_combo_dict_form_and_v3_nodes(object_info: dict[str, Any]) -> None:
    ui = _ui_graph(
        {"id": 1, "type": "RandomNoise", "mode": 0, "widgets_values": [7, "fixed"]},
        {"id": 2, "type": "KSamplerSelect", "mode": 0, "widgets_values": ["dpmpp_2m"]},
        {"id": 3, "type": "BasicScheduler", "mode": 0, "widgets_values": ["karras", 30, 0.6]},
    )
    graph = ui_to_api(ui, object_info)
    assert graph["1"] == {
        "class_type": "RandomNoise",
        "inputs": {"noise_seed": 7},
        "_meta": {"title": "RandomNoise"},
    }
    assert graph["2"]["inputs"] == {"sampler_name": "dpmpp_2m"}
    assert graph["3"]["inputs"] == {"scheduler": "karras", "steps": 30, "denoise": 0.6}
    assert graph["3"]["_meta"]["title"] == "BasicScheduler"  # no title: the node's display name


def test_upload_button_and_extra_values_are_ignored(object_info: dict[str, Any]) -> None:
    ui = _ui_graph(
        {"id": 1, "type": "LoadImage", "mode": 0, "widgets_values": ["cat.png", "image"]},
        {"id": 2, "type": "LoadImageMask", "mode": 0, "widgets_values": ["cat.png", "red", "image"]},
        {"id": 3, "type": "LoadImage", "mode": 0, "widgets_values": ["dog.png"]},
    )
    graph = ui_to_api(ui, object_info)
    assert graph["1"]["inputs"] == {"image": "cat.png"}
    assert graph["2"]["inputs"] == {"image": "cat.png", "channel": "red"}
    assert graph["3"]["inputs"] == {"image": "dog.png"}


def test_force_input_slots_of_old_exports_are_dropped(object_info: dict[str, Any]) -> None:
    new = {"id": 1, "type": "CreateHookKeyframesFromFloats", "mode": 0, "widgets_values": [0.1, 0.9, True]}
    old = {
        **new,
        "id": 2,
        "widgets_values": [-1, 0.1, 0.9, True],
    }  # before frontend 1.16: a slot per forceInput
    graph = ui_to_api(_ui_graph(new, old), object_info)
    expected = {"start_percent": 0.1, "end_percent": 0.9, "print_keyframes": True}
    assert graph["1"]["inputs"] == expected
    assert graph["2"]["inputs"] == expected


def test_widget_values_stored_by_name(object_info: dict[str, Any]) -> None:
    node = {"id": 1, "type": "EmptyLatentImage", "mode": 0, "widgets_values": {"width": 768, "height": 512}}
    assert ui_to_api(_ui_graph(node), object_info)["1"]["inputs"] == {
        "width": 768,
        "height": 512,
        "batch_size": 1,
    }


def test_link_objects_of_the_newer_schema(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    ui["links"] = [dict(zip(keys, link, strict=True)) for link in ui["links"]]
    assert ui_to_api(ui, object_info) == _json(WORKFLOWS / "txt2img.json")


# --- what only the editor has -----------------------------------------------------------------------


def test_primitive_value_is_written_into_its_target(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    _node(ui, 14)["widgets_values"] = [33, "increment"]
    assert ui_to_api(ui, object_info)["3"]["inputs"]["steps"] == 33


def test_bypassed_node_passes_inputs_of_the_same_type(
    ui: dict[str, Any], object_info: dict[str, Any]
) -> None:
    _node(ui, 10)["mode"] = 4  # bypass the LoRA loader
    graph = ui_to_api(ui, object_info)
    assert "10" not in graph
    assert graph["3"]["inputs"]["model"] == ["4", 0]
    assert graph["6"]["inputs"]["clip"] == ["4", 1]
    assert graph["7"]["inputs"]["clip"] == ["4", 1]


def test_bypassed_node_without_an_input_of_the_type_feeds_nothing(
    ui: dict[str, Any], object_info: dict[str, Any]
) -> None:
    _node(ui, 8)["mode"] = 4  # VAE Decode has no IMAGE input to pass on
    graph = ui_to_api(ui, object_info)
    assert "8" not in graph
    assert graph["9"]["inputs"] == {"filename_prefix": "txt2img"}


def test_muted_node_is_dropped_with_the_links_it_fed(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    _node(ui, 10)["mode"] = 2
    graph = ui_to_api(ui, object_info)
    assert "10" not in graph
    assert "model" not in graph["3"]["inputs"] and "clip" not in graph["6"]["inputs"]


def test_a_chain_of_reroutes_is_followed(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    second = copy.deepcopy(_node(ui, 11))
    second.update(id=20, inputs=[{"name": "", "type": "*", "link": 20}])
    ui["nodes"].append(second)
    ui["links"].append([20, 11, 0, 20, 0, "VAE"])
    next(link for link in ui["links"] if link[0] == 11)[1] = 20  # VAE Decode now hangs off the second reroute
    assert ui_to_api(ui, object_info)["8"]["inputs"]["vae"] == ["4", 2]


# --- refusals ---------------------------------------------------------------------------------------------


def test_unknown_class_is_named(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    ui["nodes"].append({"id": 30, "type": "FancyUpscaler", "mode": 0, "widgets_values": []})
    ui["nodes"].append({"id": 31, "type": "OtherMissing", "mode": 2})  # muted: dropped, not an error
    with pytest.raises(WorkflowImportError) as info:
        ui_to_api(ui, object_info)
    assert "node 30 (FancyUpscaler)" in info.value.message
    assert "OtherMissing" not in info.value.message
    assert info.value.code == "workflow_import_failed"


def test_group_nodes_and_subgraphs_are_refused(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    ui["nodes"].append({"id": 40, "type": "workflow>Hires fix", "mode": 0})
    ui["extra"]["groupNodes"] = {"Hires fix": {"nodes": [], "links": []}}
    ui["nodes"].append(
        {"id": 41, "type": "0b7f9a52-1c1e-4d55-a6a4-7a3f2b3c4d5e", "mode": 0, "title": "Upscale"}
    )
    ui["definitions"] = {"subgraphs": [{"id": "0b7f9a52-1c1e-4d55-a6a4-7a3f2b3c4d5e", "nodes": []}]}
    with pytest.raises(WorkflowImportError) as info:
        ui_to_api(ui, object_info)
    assert "node 40 (group node workflow>Hires fix)" in info.value.message
    assert "node 41 (subgraph Upscale)" in info.value.message


def test_too_few_widget_values_are_refused(ui: dict[str, Any], object_info: dict[str, Any]) -> None:
    _node(ui, 3)["widgets_values"] = [0, 20, 7, "euler", "normal", 1]  # no control value after the seed
    with pytest.raises(WorkflowImportError) as info:
        ui_to_api(ui, object_info)
    assert "node 3 (KSampler): widgets_values has 6 values (20 where a control_after_generate value" in (
        info.value.message
    )


def test_missing_trailing_values_take_defaults(object_info: dict[str, Any]) -> None:
    # An export from before the node gained a widget: the new widget gets its default, as in the editor.
    node = {"id": 1, "type": "EmptyLatentImage", "mode": 0, "widgets_values": [768, 512]}
    assert ui_to_api(_ui_graph(node), object_info)["1"]["inputs"] == {
        "width": 768,
        "height": 512,
        "batch_size": 1,
    }
    no_default = {"id": 2, "type": "LoadImage", "mode": 0, "widgets_values": []}  # no images: no default
    with pytest.raises(
        WorkflowImportError, match=r"node 2 \(LoadImage\): widgets_values has 0 values \(no value for image\)"
    ):
        ui_to_api(_ui_graph(no_default), object_info)


def test_frontend_only_widgets_are_refused(object_info: dict[str, Any]) -> None:
    info = {"input": {"required": {"image": ["WEBCAM", {}], "width": ["INT", {"default": 0}]}}}
    with pytest.raises(WorkflowImportError, match="WebcamCapture: input 'image' is a WEBCAM widget"):
        ui_to_api(
            _ui_graph({"id": 1, "type": "WebcamCapture", "mode": 0}), {**object_info, "WebcamCapture": info}
        )


def test_api_format_is_not_ui_format(object_info: dict[str, Any]) -> None:
    with pytest.raises(WorkflowImportError, match="not a UI-format export"):
        ui_to_api(_json(WORKFLOWS / "tiny.json"), object_info)
