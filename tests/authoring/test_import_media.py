"""Importing graphs with input loaders: each loader's file input becomes a required media parameter
(LoadImage -> image, LoadImageMask -> mask, LoadVideo -> video, LoadAudio -> audio), never a default."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyjobs.authoring.guess import guess_parameters
from comfyjobs.authoring.importer import import_workflow
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.registry import Target

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "object_info_0.3.75.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    return tmp_path


def _official_template(name: str) -> Path:
    package = pytest.importorskip("comfyui_workflow_templates_media_image").__name__
    path = Path(str(resources.files(package).joinpath("templates", name)))
    assert path.is_file(), f"{name} is not in {package}"
    return path


def _loaders_graph() -> dict[str, Any]:
    """Two images, a mask, a video and an audio file, each feeding something."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "style.png"}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "4": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "5": {"class_type": "LoadAudio", "inputs": {"audio": "voice.flac"}},
        "6": {
            "class_type": "ImageCompositeMasked",
            "inputs": {"destination": ["1", 0], "source": ["2", 0], "mask": ["3", 0], "x": 0, "y": 0},
        },
        "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "m", "images": ["6", 0]}},
        "8": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "v"}},
        "9": {"class_type": "SaveAudio", "inputs": {"audio": ["5", 0], "filename_prefix": "a"}},
    }


def test_official_image2image_template_imports_with_an_image_parameter(
    root: Path, object_info: dict[str, Any]
) -> None:
    source = _official_template("image2image.json")
    base_before = (root / "manifests" / "base.yaml").read_text(encoding="utf-8")
    result = import_workflow(
        source,
        "i2i",
        manifest_dir=root / "manifests",
        workflow_dir=root / "workflows",
        object_info=object_info,
    )
    assert result.source_format == "ui"
    first = result.parameters[0]
    assert (first.name, first.created, first.default) == ("image", False, None)
    assert not any(p.created for p in result.parameters)  # base.yaml has them all: left as it was
    assert (root / "manifests" / "base.yaml").read_text(encoding="utf-8") == base_before

    workflow = load_registry(root / "manifests", root / "workflows").workflow("i2i")
    assert list(workflow.parameters)[:2] == ["image", "prompt"]
    assert "denoise" in workflow.parameters and "checkpoint" in workflow.parameters
    image = workflow.parameters["image"]
    assert (image.type, image.required, image.default) == ("image", True, None)
    assert image.targets == (Target(node_id="10", input="image"),)
    assert workflow.template["10"]["class_type"] == "LoadImage"
    assert [p.name for p in workflow.media_parameters] == ["image"]
    entry = yaml.safe_load((root / "manifests" / "workflows.yaml").read_text(encoding="utf-8"))
    assert entry["workflows"]["i2i"]["parameters"]["image"] == {"targets": [{"node": "10", "input": "image"}]}


def test_loaders_give_mask_video_and_audio_parameters(tmp_path: Path) -> None:
    source = tmp_path / "loaders.json"
    source.write_text(json.dumps(_loaders_graph()), encoding="utf-8")
    manifests, workflows = tmp_path / "m", tmp_path / "w"
    result = import_workflow(
        source, "media", manifest_dir=manifests, workflow_dir=workflows, object_info=None
    )
    assert [(p.name, p.role, p.created, p.default) for p in result.parameters] == [
        ("image", "image", True, None),
        ("image_2", "image", True, None),
        ("mask", "mask", True, None),
        ("video", "video", True, None),
        ("audio", "audio", True, None),
    ]

    base = yaml.safe_load((manifests / "base.yaml").read_text(encoding="utf-8"))["parameters"]
    assert all("default" not in spec for spec in base.values())  # the loader refuses one on media
    assert base["video"]["type"] == "video" and base["audio"]["type"] == "audio"
    assert base["image_2"]["type"] == "image"

    params = load_registry(manifests, workflows).workflow("media").parameters
    assert {name: (p.type, p.required) for name, p in params.items()} == {
        "image": ("image", True),
        "image_2": ("image", True),
        "mask": ("mask", True),
        "video": ("video", True),
        "audio": ("audio", True),
    }
    assert [params[n].targets for n in params] == [
        (Target("1", "image"),),
        (Target("2", "image"),),
        (Target("3", "image"),),
        (Target("4", "file"),),
        (Target("5", "audio"),),
    ]


def test_media_parameters_are_reused_from_base_yaml(root: Path) -> None:
    graph = {k: v for k, v in _loaders_graph().items() if k in ("1", "3", "6", "7")}
    graph["6"]["inputs"]["source"] = ["1", 0]
    source = root / "inpaint_export.json"
    source.write_text(json.dumps(graph), encoding="utf-8")
    result = import_workflow(
        source,
        "composite",
        manifest_dir=root / "manifests",
        workflow_dir=root / "workflows",
        object_info=None,
    )
    assert [(p.name, p.created) for p in result.parameters] == [("image", False), ("mask", False)]
    workflow = load_registry(root / "manifests", root / "workflows").workflow("composite")
    mask = workflow.parameters["mask"]
    assert (mask.type, mask.required, mask.targets) == ("mask", True, (Target("3", "image"),))


def test_a_loader_fed_by_a_link_is_not_a_parameter() -> None:
    graph = _loaders_graph()
    graph["10"] = {"class_type": "PrimitiveString", "inputs": {"value": "photo.png"}}
    graph["1"]["inputs"]["image"] = ["10", 0]
    names = [g.name for g in guess_parameters(graph)]
    assert names == ["image", "mask", "video", "audio"]  # style.png is now the only image
