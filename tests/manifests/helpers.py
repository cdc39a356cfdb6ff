"""Small manifest fixtures for the manifest tests: write base.yaml / workflows.yaml / loras.yaml and
templates into a tmp folder, load them, and read back the problems of a ManifestError."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyjobs.errors import ManifestError
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.registry import Registry, Workflow

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MANIFESTS = REPO_ROOT / "manifests"
SHIPPED_WORKFLOWS = REPO_ROOT / "workflows"

BASE_FILE = "manifests/base.yaml"
WORKFLOWS_FILE = "manifests/workflows.yaml"
LORAS_FILE = "manifests/loras.yaml"

# An API-format template: a loader, a LoRA loader fed by it, a prompt, a sampler and two nodes sharing the
# title "Save" (for the ambiguous-title check).
TEMPLATE: dict[str, Any] = {
    "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}, "_meta": {"title": "Loader"}},
    "2": {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["1", 0],
            "clip": ["1", 1],
            "lora_name": "none.safetensors",
            "strength_model": 1.0,
            "strength_clip": 1.0,
        },
        "_meta": {"title": "LoRA"},
    },
    "3": {"class_type": "Encode", "inputs": {"text": "", "clip": ["2", 1]}, "_meta": {"title": "Prompt"}},
    "4": {
        "class_type": "Sampler",
        "inputs": {
            "seed": 0,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "tiled": False,
            "model": ["2", 0],
            "positive": ["3", 0],
        },
        "_meta": {"title": "Sampler"},
    },
    "5": {
        "class_type": "Save",
        "inputs": {"filename_prefix": "a", "images": ["4", 0]},
        "_meta": {"title": "Save"},
    },
    "6": {
        "class_type": "Save",
        "inputs": {"filename_prefix": "b", "images": ["4", 0]},
        "_meta": {"title": "Save"},
    },
}

_BASE_PARAMS: dict[str, Any] = {
    "prompt": {"type": "string", "max_length": 20, "targets": [{"title": "Prompt", "input": "text"}]},
    "seed": {
        "type": "integer",
        "default": "random",
        "min": 0,
        "max": 2**64 - 1,
        "targets": [{"title": "Sampler", "input": "seed"}],
    },
    "steps": {
        "type": "integer",
        "description": "Sampling steps.",
        "default": 20,
        "min": 1,
        "max": 50,
        "targets": [{"node": "4", "input": "steps"}],
    },
    "cfg": {
        "type": "number",
        "description": "Guidance.",
        "default": 7.0,
        "min": 0.0,
        "max": 30.0,
        "example": 6.5,
        "targets": [{"node": "4", "input": "cfg"}],
    },
    "sampler": {
        "type": "choice",
        "default": "euler",
        "choices": ["euler", "heun"],
        "targets": [{"node": "4", "input": "sampler_name"}],
    },
    "tiled": {"type": "boolean", "default": False, "targets": [{"node": "4", "input": "tiled"}]},
    "checkpoint": {
        "type": "choice",
        "choices_from": "checkpoints",
        "default": "a.safetensors",
        "targets": [{"title": "Loader", "input": "ckpt_name"}],
    },
    "lora": {
        "type": "choice",
        "choices_from": "loras",
        "nullable": True,
        "default": None,
        "targets": [{"title": "LoRA", "input": "lora_name", "bypass_when_null": ["model", "clip"]}],
    },
    "lora_strength": {
        "type": "number",
        "default": 1.0,
        "min": -4.0,
        "max": 4.0,
        "targets": [{"node": "2", "input": "strength_model"}, {"node": "2", "input": "strength_clip"}],
    },
}


def model_param(**changes: Any) -> dict[str, Any]:
    """`checkpoint` as a model parameter (a file name in checkpoints/, or a URL)."""
    return {
        "type": "model",
        "folder": "checkpoints",
        "default": "a.safetensors",
        "targets": [{"title": "Loader", "input": "ckpt_name"}],
        **changes,
    }


def base_params() -> dict[str, Any]:
    """A fresh copy of the fixture's base.yaml parameters, to edit in a test."""
    return copy.deepcopy(_BASE_PARAMS)


def template() -> dict[str, Any]:
    return copy.deepcopy(TEMPLATE)


def _write(path: Path, content: Any) -> None:
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")


def write_manifests(
    root: Path,
    *,
    params: dict[str, Any] | None = None,
    base: Any = None,
    workflow: dict[str, Any] | None = None,
    workflows: Any = None,
    loras: Any = None,
    templates: dict[str, Any] | None = None,
) -> Path:
    """Writes root/manifests/{base,workflows,loras}.yaml and root/workflows/<templates>; returns root.

    ``base``/``workflows``/``loras`` are whole files (a dict is dumped as YAML, a str written as is);
    ``params`` is a shortcut for base.yaml's parameters (default: the fixture's), ``workflow`` one for a
    single workflow ``w`` (default: template t.json exposing every base parameter). loras.yaml is only
    written when given; ``templates`` maps file names to JSON data (a str is written as is).
    """
    manifest_dir, workflow_dir = root / "manifests", root / "workflows"
    manifest_dir.mkdir(parents=True, exist_ok=True)
    workflow_dir.mkdir(parents=True, exist_ok=True)
    if base is None:
        base = {"parameters": base_params() if params is None else params}
    if workflows is None:
        if workflow is None:
            names = base["parameters"] if isinstance(base, dict) else {}
            workflow = {"template": "t.json", "parameters": dict.fromkeys(names)}
        workflows = {"workflows": {"w": workflow}}
    _write(manifest_dir / "base.yaml", base)
    _write(manifest_dir / "workflows.yaml", workflows)
    if loras is not None:
        _write(manifest_dir / "loras.yaml", loras)
    for name, data in ({"t.json": TEMPLATE} if templates is None else templates).items():
        text = data if isinstance(data, str) else json.dumps(data)
        (workflow_dir / name).write_text(text, encoding="utf-8")
    return root


def load(root: Path) -> Registry:
    return load_registry(root / "manifests", root / "workflows")


def load_shipped() -> Registry:
    return load_registry(SHIPPED_MANIFESTS, SHIPPED_WORKFLOWS)


def problems(root: Path) -> list[tuple[str, str, str]]:
    """Loads and expects a ManifestError; its problems as (file relative to root, key, reason)."""
    with pytest.raises(ManifestError) as info:
        load(root)
    return [(Path(p.file).relative_to(root).as_posix(), p.key, p.reason) for p in info.value.problems]


def load_workflow(root: Path, parameters: dict[str, Any], **params: Any) -> Workflow:
    """Writes the fixture with one workflow `w` (template t.json) exposing ``parameters``; loads `w`.
    ``params`` is passed on to write_manifests (e.g. params= for base.yaml's parameters)."""
    write_manifests(root, workflow={"template": "t.json", "parameters": parameters}, **params)
    return load(root).workflow("w")
