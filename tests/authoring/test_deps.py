"""workflow_deps and format_deps: node classes and model files of API-format graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comfyjobs.authoring.deps import ModelRef, format_deps, workflow_deps

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _shipped(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))
    return data


def test_txt2img_classes_and_models() -> None:
    deps = workflow_deps(_shipped("txt2img.json"))
    assert deps.node_classes == (
        "CLIPTextEncode",
        "CheckpointLoaderSimple",
        "EmptyLatentImage",
        "KSampler",
        "LoraLoader",
        "SaveImage",
        "VAEDecode",
    )
    assert deps.models == (
        ModelRef("smoke-sd15.safetensors", "checkpoints", "4", "CheckpointLoaderSimple", "ckpt_name"),
        ModelRef("none.safetensors", "loras", "10", "LoraLoader", "lora_name"),
    )
    assert deps.files == (("checkpoints", "smoke-sd15.safetensors"), ("loras", "none.safetensors"))


def test_tiny_needs_no_model() -> None:
    deps = workflow_deps(_shipped("tiny.json"))
    assert deps.node_classes == ("EmptyImage", "SaveImage")
    assert deps.models == ()
    assert "Model files (0):\n  (none)" in format_deps(deps)


def test_unknown_loaders_have_no_folder_and_non_files_are_ignored() -> None:
    graph = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux/dev.SAFETENSORS", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "t5.gguf", "clip_name2": "l.safetensors"},
        },
        "3": {"class_type": "MyCustomLoader", "inputs": {"path": "x.onnx", "model": ["1", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a .pt file", "clip": ["2", 0]}},
        "5": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},  # an approximation: no file
        "7": {"_meta": {"title": "not a node"}},
    }
    deps = workflow_deps(graph)
    assert deps.node_classes == (
        "CLIPTextEncode",
        "DualCLIPLoader",
        "MyCustomLoader",
        "UNETLoader",
        "UpscaleModelLoader",
        "VAELoader",
    )
    assert [(m.folder, m.file) for m in deps.models] == [
        ("diffusion_models", "flux/dev.SAFETENSORS"),
        ("text_encoders", "l.safetensors"),
        ("text_encoders", "t5.gguf"),
        ("upscale_models", "4x.pth"),
        (None, "x.onnx"),
    ]
    text = format_deps(deps)
    assert "  diffusion_models/flux/dev.SAFETENSORS  <- node 1 UNETLoader.unet_name" in text
    assert "  x.onnx  (folder unknown)  <- node 3 MyCustomLoader.path" in text


def test_same_file_twice_is_one_file_and_order_does_not_matter() -> None:
    graph = {
        "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "a.safetensors"}},
        "9": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "a.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.ckpt"}},
    }
    deps = workflow_deps(graph)
    assert deps == workflow_deps(dict(reversed(list(graph.items()))))
    assert [m.node_id for m in deps.models] == ["2", "9", "10"]  # numeric order of node ids
    assert deps.files == (("checkpoints", "m.ckpt"), ("loras", "a.safetensors"))
    assert "loras/a.safetensors  <- node 9 LoraLoaderModelOnly.lora_name, node 10 LoraLoader.lora_name" in (
        format_deps(deps)
    )
