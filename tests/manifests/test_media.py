"""Media parameters (image, mask, video, audio, file) in the manifests: required unless nullable, never a
default, a string value (an asset id or a URL) in requests; and the shipped workflows that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyjobs.errors import InvalidParamsError
from comfyjobs.manifests.params import validate_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Target
from comfyjobs.manifests.schema import MEDIA_TYPES

from .helpers import (
    WORKFLOWS_FILE,
    base_params,
    load_shipped,
    load_workflow,
    problems,
    template,
    write_manifests,
)

W = "workflows.w.parameters"


def _media_fixture(kind: str = "image", **spec: Any) -> dict[str, Any]:
    """The fixture's template with a loader node titled "Input" (node 7), and base.yaml's parameters with a
    media parameter `file_in` of type ``kind`` targeting it."""
    params = base_params()
    params["file_in"] = {"type": kind, "targets": [{"title": "Input", "input": "image"}], **spec}
    tpl = template()
    tpl["7"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Input"}}
    return {"params": params, "templates": {"t.json": tpl}}


@pytest.mark.parametrize("kind", MEDIA_TYPES)
def test_a_media_parameter_without_default_is_required(tmp_path: Path, kind: str) -> None:
    wf = load_workflow(tmp_path, {"prompt": None, "file_in": None}, **_media_fixture(kind))
    param = wf.parameters["file_in"]
    assert (param.type, param.required, param.default, param.nullable) == (kind, True, None, False)
    assert param.is_media
    assert param.targets == (Target(node_id="7", input="image"),)
    assert wf.media_parameters == [param]
    assert param.public_dict() == {"name": "file_in", "type": kind, "description": "", "required": True}


def test_a_nullable_media_parameter_may_be_left_out(tmp_path: Path) -> None:
    fixture = _media_fixture("image", nullable=True, default=None)
    wf = load_workflow(tmp_path, {"prompt": None, "file_in": None}, **fixture)
    param = wf.parameters["file_in"]
    assert (param.required, param.default, param.nullable) == (False, None, True)
    assert validate_params(wf, {"prompt": "x"}).model_dump()["file_in"] is None

    # Nullable but no default: still required, and null is an accepted value.
    required = load_workflow(tmp_path, {"file_in": None}, **_media_fixture("mask", nullable=True))
    assert required.parameters["file_in"].required
    assert validate_params(required, {"file_in": None}).model_dump() == {"file_in": None}


def test_a_media_value_is_an_asset_id_or_url_string(tmp_path: Path) -> None:
    wf = load_workflow(tmp_path, {"file_in": None}, **_media_fixture())
    for value in ("a3f9c2d4e5b6", "https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo="):
        assert validate_params(wf, {"file_in": value}).model_dump() == {"file_in": value}
    for bad in ({}, {"file_in": ""}, {"file_in": 5}, {"file_in": None}):
        with pytest.raises(InvalidParamsError, match=r"params\.file_in"):
            validate_params(wf, bad)


def test_a_default_on_a_media_parameter_is_refused(tmp_path: Path) -> None:
    fixture = _media_fixture("image", default="example.png")
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"file_in": None}}, **fixture)
    assert problems(tmp_path) == [
        (
            WORKFLOWS_FILE,
            f"{W}.file_in.default",
            "image parameters have no default (null, or leave it required)",
        )
    ]


def test_a_default_given_by_a_workflow_override_is_refused(tmp_path: Path) -> None:
    workflow = {"template": "t.json", "parameters": {"file_in": {"default": "a.mp4"}}}
    write_manifests(tmp_path, workflow=workflow, **_media_fixture("video"))
    assert problems(tmp_path) == [
        (
            WORKFLOWS_FILE,
            f"{W}.file_in.default",
            "video parameters have no default (null, or leave it required)",
        )
    ]


@pytest.mark.parametrize("field", [{"min": 0}, {"max_length": 10}, {"choices": ["a.png"]}])
def test_media_parameters_take_no_bounds_or_choices(tmp_path: Path, field: dict[str, Any]) -> None:
    fixture = _media_fixture("image", **field)
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"file_in": None}}, **fixture)
    found = problems(tmp_path)
    assert found and all(key.startswith(f"{W}.file_in") for _, key, _ in found)


# --- the shipped media workflows ---------------------------------------------------------------------------


def test_shipped_img2img() -> None:
    wf = load_shipped().workflow("img2img")
    p = wf.parameters
    assert [m.name for m in wf.media_parameters] == ["image"]
    assert (p["image"].type, p["image"].required) == ("image", True)
    assert p["image"].targets == (Target(node_id="10", input="image"),)
    assert p["prompt"].required
    assert (p["denoise"].default, p["denoise"].minimum, p["denoise"].maximum) == (0.75, 0.0, 1.0)
    assert p["denoise"].targets == (Target(node_id="3", input="denoise"),)
    assert wf.template["11"]["class_type"] == "VAEEncode"
    assert wf.template["3"]["inputs"]["latent_image"] == ["11", 0]


def test_shipped_inpaint() -> None:
    wf = load_shipped().workflow("inpaint")
    p = wf.parameters
    assert [m.name for m in wf.media_parameters] == ["image", "mask"]
    assert p["mask"].type == "mask" and p["mask"].required
    assert p["mask"].targets == (Target(node_id="12", input="image"),)
    assert wf.template["12"]["class_type"] == "LoadImageMask"
    assert wf.template["12"]["inputs"]["channel"] == "red"  # a plain black/white PNG: white = repaint
    assert (p["grow_mask_by"].default, p["grow_mask_by"].minimum, p["grow_mask_by"].maximum) == (6, 0, 64)
    assert p["grow_mask_by"].targets == (Target(node_id="11", input="grow_mask_by"),)
    assert "denoise" not in p  # VAEEncodeForInpaint wants the full 1.0


def test_shipped_upscale_workflows() -> None:
    registry = load_shipped()
    up = registry.workflow("upscale").parameters
    assert list(up) == ["image", "scale_by", "upscale_method"]
    assert (up["scale_by"].default, up["scale_by"].minimum, up["scale_by"].maximum) == (2.0, 0.05, 8.0)
    assert up["upscale_method"].default == "lanczos"
    assert up["upscale_method"].choices == ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")

    model = registry.workflow("upscale-model").parameters
    assert list(model) == ["image", "upscale_model"]
    assert model["upscale_model"].required and model["upscale_model"].choices_from == "upscale_models"
    assert model["upscale_model"].targets == (Target(node_id="2", input="model_name"),)


def test_shipped_media_workflows_build_graphs() -> None:
    registry = load_shipped()
    wf = registry.workflow("upscale")
    request = validate_params(wf, {"image": "uploaded-by-worker.png", "scale_by": 1.5})
    graph = build_graph(wf, request.model_dump(), registry.loras)
    assert graph["1"]["inputs"]["image"] == "uploaded-by-worker.png"
    assert graph["2"]["inputs"] == {"image": ["1", 0], "upscale_method": "lanczos", "scale_by": 1.5}
    with pytest.raises(InvalidParamsError, match=r"^params\.mask: Field required$"):
        validate_params(registry.workflow("inpaint"), {"image": "a.png", "prompt": "x"})
