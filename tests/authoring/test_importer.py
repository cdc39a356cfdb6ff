"""import_workflow: API and UI exports become loadable workflows; manifests are appended to, never
rewritten; every refusal leaves the files as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyjobs.authoring import importer
from comfyjobs.authoring.guess import Guess
from comfyjobs.authoring.importer import ImportResult, import_workflow, template_json
from comfyjobs.authoring.yaml_text import append_entries, remove_entry
from comfyjobs.errors import WorkflowImportError
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Registry

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
TXT2IMG = REPO / "workflows" / "txt2img.json"
TXT2IMG_UI = DATA / "txt2img_ui.json"
SHIPPED_WORKFLOWS = {"txt2img", "tiny", "img2img", "inpaint", "upscale", "upscale-model", "tiny-media"}
SHIPPED_TXT2IMG_PARAMS = [
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "cfg",
    "sampler",
    "scheduler",
    "width",
    "height",
    "batch_size",
    "checkpoint",
    "lora",
    "lora_strength",
]


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "object_info_0.3.75.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    return tmp_path


def _import(root: Path, source: Path, workflow_id: str, **kwargs: Any) -> ImportResult:
    kwargs.setdefault("object_info", None)
    return import_workflow(
        source, workflow_id, manifest_dir=root / "manifests", workflow_dir=root / "workflows", **kwargs
    )


def _load(root: Path) -> Registry:
    return load_registry(root / "manifests", root / "workflows")


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write_source(root: Path, graph: dict[str, Any], name: str = "source.json") -> Path:
    path = root / name
    path.write_text(json.dumps(graph), encoding="utf-8")
    return path


def _yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


# --- the two formats ------------------------------------------------------------------------------------


def test_api_and_ui_exports_import_as_equivalent_workflows(root: Path, object_info: dict[str, Any]) -> None:
    base_before = (root / "manifests" / "base.yaml").read_text(encoding="utf-8")
    workflows_before = (root / "manifests" / "workflows.yaml").read_text(encoding="utf-8")

    api = _import(root, TXT2IMG, "t2")
    ui = _import(root, TXT2IMG_UI, "t2ui", object_info=object_info)
    assert (api.source_format, ui.source_format) == ("api", "ui")

    registry = _load(root)  # the manifests load, as written, with the shipped workflows
    assert set(registry.workflows) == {*SHIPPED_WORKFLOWS, "t2", "t2ui"}
    t2, t2ui = registry.workflow("t2"), registry.workflow("t2ui")
    assert t2.template == json.loads(TXT2IMG.read_text(encoding="utf-8"))
    for node_id, node in t2.template.items():  # same class types and inputs (7 == 7.0 for cfg)
        assert t2ui.template[node_id]["class_type"] == node["class_type"]
        assert t2ui.template[node_id]["inputs"] == node["inputs"]
    assert list(t2.parameters) == list(t2ui.parameters)
    assert list(t2.parameters) == [*SHIPPED_TXT2IMG_PARAMS[:7], "denoise", *SHIPPED_TXT2IMG_PARAMS[7:]]
    assert [p.name for p in api.parameters] == list(t2.parameters)

    # The existing manifests are appended to, byte for byte.
    assert (root / "manifests" / "base.yaml").read_text(encoding="utf-8").startswith(base_before)
    assert (root / "manifests" / "workflows.yaml").read_text(encoding="utf-8").startswith(workflows_before)

    # Targets are the new template's node ids, written per workflow; the shipped base targets stay.
    steps = t2ui.parameters["steps"]
    assert [(t.node_id, t.input) for t in steps.targets] == [("3", "steps")]
    lora = t2.parameters["lora"]
    assert lora.nullable and lora.default is None
    assert [(t.node_id, t.input, t.bypass_when_null) for t in lora.targets] == [
        ("10", "lora_name", ("model", "clip"))
    ]
    assert t2.prompt_parameter == "prompt"
    assert _yaml(root / "manifests" / "base.yaml")["parameters"]["seed"]["targets"] == [
        {"title": "Sampler", "input": "seed"}
    ]
    # Every parameter is one of base.yaml's; denoise (0.75 there, for img2img) takes the template's 1.0.
    assert not any(p.created for p in (*api.parameters, *ui.parameters))
    assert t2.parameters["denoise"].default == t2ui.parameters["denoise"].default == 1.0

    # Both run as the shipped workflow does.
    params = {
        "prompt": "a fox",
        "negative_prompt": "blur",
        "seed": 5,
        "steps": 9,
        "cfg": 4.5,
        "sampler": "heun",
        "scheduler": "karras",
        "width": 256,
        "height": 320,
        "batch_size": 2,
        "checkpoint": "smoke-sd15.safetensors",
        "lora": None,
        "lora_strength": 1.0,
    }
    shipped = build_graph(registry.workflow("txt2img"), params, registry.loras)
    assert build_graph(t2, {**params, "denoise": 1.0}, registry.loras) == shipped
    assert build_graph(t2ui, {**params, "denoise": 1.0}, registry.loras) == shipped


def test_a_parameter_base_yaml_lacks_is_created_once(root: Path, object_info: dict[str, Any]) -> None:
    base = root / "manifests" / "base.yaml"
    base.write_text(remove_entry(base.read_text(encoding="utf-8"), "parameters", "denoise"), encoding="utf-8")
    (root / "manifests" / "workflows.yaml").write_text(
        remove_entry(
            (root / "manifests" / "workflows.yaml").read_text(encoding="utf-8"), "workflows", "img2img"
        ),
        encoding="utf-8",
    )
    api = _import(root, TXT2IMG, "t2")
    ui = _import(root, TXT2IMG_UI, "t2ui", object_info=object_info)
    assert {p.name for p in api.parameters if p.created} == {"denoise"}
    assert not any(p.created for p in ui.parameters)  # the second import reuses the first's denoise
    assert _yaml(base)["parameters"]["denoise"] == {
        "type": "number",
        "description": "Share of the latent the sampler replaces (1.0: all of it).",
        "default": 1.0,
        "min": 0.0,
        "max": 1.0,
    }
    assert _load(root).workflow("t2ui").parameters["denoise"].default == 1.0


def test_template_values_become_workflow_defaults_when_valid(root: Path) -> None:
    graph = json.loads(TXT2IMG.read_text(encoding="utf-8"))
    graph["3"]["inputs"].update(steps=30, cfg=99.0, sampler_name="dpmpp_2m", scheduler="simple_new", seed=7)
    graph["7"]["inputs"]["text"] = "watermark"
    del graph["4"]["_meta"]  # an export without titles gets the class name (no object_info)
    result = _import(root, _write_source(root, graph), "tuned")

    workflow = _load(root).workflow("tuned")
    params = workflow.parameters
    assert params["steps"].default == 30
    assert params["cfg"].default == 7.0  # 99 is over base.yaml's max: the base default stays
    assert params["sampler"].default == "dpmpp_2m"
    assert params["scheduler"].default == "normal"  # not one of base.yaml's choices
    assert params["seed"].default == "random"
    assert params["negative_prompt"].default == "watermark"
    assert workflow.template["4"]["_meta"]["title"] == "CheckpointLoaderSimple"
    assert (
        json.loads((root / "workflows" / "tuned.json").read_text(encoding="utf-8"))["3"]["inputs"]["steps"]
        == 30
    )
    assert result.template_path == root / "workflows" / "tuned.json"


def test_second_sampler_and_lora_get_numbered_parameters(root: Path, object_info: dict[str, Any]) -> None:
    graph = json.loads(TXT2IMG.read_text(encoding="utf-8"))
    graph["11"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["10", 0], "lora_name": "detail.safetensors", "strength_model": 0.5},
    }
    graph["12"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "add_noise": "enable",
            "noise_seed": 3,
            "steps": 200,
            "cfg": 2.0,
            "sampler_name": "uni_pc_bh2",
            "scheduler": "beta",
            "start_at_step": 10,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
            "model": ["11", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["3", 0],
        },
        "_meta": {"title": "Refiner"},
    }
    graph["8"]["inputs"]["samples"] = ["12", 0]
    result = _import(root, _write_source(root, graph), "two-pass", object_info=object_info)

    workflow = _load(root).workflow("two-pass")
    names = list(workflow.parameters)
    assert names[:9] == [
        "prompt",
        "negative_prompt",
        "seed",
        "seed_2",
        "steps",
        "steps_2",
        "cfg",
        "cfg_2",
        "sampler",
    ]
    assert names[-4:] == ["lora", "lora_strength", "lora_2", "lora_2_strength"]
    assert {p.name for p in result.parameters if p.created} == {
        "seed_2",
        "steps_2",
        "cfg_2",
        "sampler_2",
        "scheduler_2",
        "lora_2",
        "lora_2_strength",
    }
    p = workflow.parameters
    # Modelled on base.yaml's steps, its bounds widened to admit the template's value.
    assert (p["steps_2"].default, p["steps_2"].minimum, p["steps_2"].maximum) == (200, 1, 200)
    assert p["steps_2"].description == "Sampling steps. (two-pass: node 12, Refiner)"
    assert p["sampler_2"].default == "uni_pc_bh2" and p["sampler_2"].choices is not None
    assert "uni_pc_bh2" in p["sampler_2"].choices
    assert p["seed_2"].default == "random"
    assert [(t.node_id, t.input) for t in p["seed_2"].targets] == [("12", "noise_seed")]
    assert [(t.node_id, t.bypass_when_null) for t in p["lora_2"].targets] == [("11", ("model",))]
    assert [(t.node_id, t.input) for t in p["lora_2_strength"].targets] == [("11", "strength_model")]


def test_incompatible_base_parameter_is_not_reused(root: Path) -> None:
    base = root / "manifests" / "base.yaml"
    text = remove_entry(base.read_text(encoding="utf-8"), "parameters", "denoise")
    base.write_text(
        text + "\n  denoise:\n    type: string\n    description: Something else.\n", encoding="utf-8"
    )
    workflows = root / "manifests" / "workflows.yaml"
    workflows.write_text(remove_entry(workflows.read_text(encoding="utf-8"), "workflows", "img2img"), "utf-8")
    result = _import(root, TXT2IMG, "t2")
    assert [p.name for p in result.parameters if p.created] == ["denoise_t2"]
    assert _load(root).workflow("t2").parameters["denoise_t2"].type == "number"


def test_fresh_manifest_folder(tmp_path: Path) -> None:
    tiny = REPO / "workflows" / "tiny.json"
    result = import_workflow(
        tiny, "tiny", manifest_dir=tmp_path / "m", workflow_dir=tmp_path / "w", object_info=None
    )
    assert [p.name for p in result.parameters] == ["width", "height", "batch_size"]
    workflow = load_registry(tmp_path / "m", tmp_path / "w").workflow("tiny")
    assert workflow.parameters["width"].default == 64
    assert workflow.parameters["width"].minimum == 64


# --- refusals ---------------------------------------------------------------------------------------------


def test_ui_export_needs_object_info(root: Path) -> None:
    before = _snapshot(root)
    with pytest.raises(WorkflowImportError, match="needs the node definitions of a running ComfyUI"):
        _import(root, TXT2IMG_UI, "t2ui")
    assert _snapshot(root) == before


def test_existing_id_is_refused_unless_overwrite(root: Path, object_info: dict[str, Any]) -> None:
    before = _snapshot(root)
    with pytest.raises(WorkflowImportError, match="workflow 'txt2img' exists already"):
        _import(root, TXT2IMG, "txt2img")
    (root / "workflows" / "other.json").write_text("{}", encoding="utf-8")
    with pytest.raises(WorkflowImportError, match=r"other\.json exists already"):
        _import(root, TXT2IMG, "other")
    (root / "workflows" / "other.json").unlink()
    assert _snapshot(root) == before

    _import(root, TXT2IMG, "t2")
    _import(root, TXT2IMG_UI, "t2", object_info=object_info, overwrite=True)
    text = (root / "manifests" / "workflows.yaml").read_text(encoding="utf-8")
    assert text.count("\n  t2:\n") == 1
    assert "Imported from txt2img_ui.json." in text and "Imported from txt2img.json." not in text
    assert _load(root).workflow("t2").template["3"]["inputs"]["cfg"] == 7


def test_unknown_class_is_refused(root: Path, object_info: dict[str, Any]) -> None:
    graph = json.loads(TXT2IMG.read_text(encoding="utf-8"))
    graph["20"] = {"class_type": "UltimateSDUpscale", "inputs": {"image": ["8", 0]}}
    source = _write_source(root, graph)
    ui = json.loads(TXT2IMG_UI.read_text(encoding="utf-8"))
    ui["nodes"].append({"id": 20, "type": "UltimateSDUpscale", "mode": 0, "inputs": [], "widgets_values": []})
    ui_source = _write_source(root, ui, "ui.json")
    before = _snapshot(root)
    with pytest.raises(WorkflowImportError, match=r"node 20 \(UltimateSDUpscale\)"):
        _import(root, source, "up", object_info=object_info)
    with pytest.raises(WorkflowImportError, match=r"node 20 \(UltimateSDUpscale\)"):
        _import(root, ui_source, "up", object_info=object_info)
    assert _snapshot(root) == before


def test_group_node_is_refused(root: Path, object_info: dict[str, Any]) -> None:
    ui = json.loads(TXT2IMG_UI.read_text(encoding="utf-8"))
    ui["nodes"].append({"id": 21, "type": "workflow>Detailer", "mode": 0})
    source = _write_source(root, ui)
    before = _snapshot(root)
    with pytest.raises(WorkflowImportError, match=r"node 21 \(group node workflow>Detailer\)"):
        _import(root, source, "grouped", object_info=object_info)
    assert _snapshot(root) == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"1": {"inputs": {}}}', "no class_type"),
    ],
)
def test_unreadable_sources_are_refused(root: Path, content: str, reason: str) -> None:
    source = root / "bad.json"
    source.write_text(content, encoding="utf-8")
    with pytest.raises(WorkflowImportError, match=reason):
        _import(root, source, "bad")
    with pytest.raises(WorkflowImportError, match="use letters, digits"):
        _import(root, TXT2IMG, "no spaces")


def test_a_result_that_would_not_load_is_rolled_back(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = Guess(name="steps", role="steps", targets=(("3", "stepz"),), value=20)
    monkeypatch.setattr(importer, "guess_parameters", lambda graph, object_info: [wrong])
    before = _snapshot(root)
    with pytest.raises(WorkflowImportError, match=r"(?s)would not load.*workflows\.t2\.parameters\.steps"):
        _import(root, TXT2IMG, "t2")
    assert _snapshot(root) == before


def test_templates_are_written_in_the_house_style() -> None:
    graph = json.loads(TXT2IMG.read_text(encoding="utf-8"))
    text = template_json(graph)
    assert json.loads(text) == graph
    assert '    "inputs": {"text": "", "clip": ["10", 1]},\n' in text  # short inputs on one line
    assert '      "model": ["4", 0],\n' in text  # long ones one input a line


# --- editing YAML as text ---------------------------------------------------------------------------------


def test_append_keeps_comments_and_indentation() -> None:
    text = (
        "# header\nworkflows:\n    a:  # four-space indent\n        template: a.json\n\n# trailer\nother: 1\n"
    )
    new = append_entries(text, "workflows", {"b": {"template": "b.json", "parameters": {}}}, comment="new")
    assert new == (
        "# header\nworkflows:\n    a:  # four-space indent\n        template: a.json\n"
        "\n    # new\n    b:\n        template: b.json\n        parameters: {}\n"
        "\n# trailer\nother: 1\n"
    )
    assert remove_entry(new, "workflows", "b") == text


def test_append_creates_or_fills_an_empty_mapping() -> None:
    assert yaml.safe_load(append_entries("", "parameters", {"x": {"type": "string"}})) == {
        "parameters": {"x": {"type": "string"}}
    }
    assert append_entries("parameters: {}\n", "parameters", {"x": 1}) == "parameters:\n  x: 1\n"
    with pytest.raises(ValueError, match="flow style"):
        append_entries("parameters: {a: 1}\n", "parameters", {"x": 1})
    with pytest.raises(ValueError, match="has a already"):
        append_entries("parameters:\n  a: 1\n", "parameters", {"a": 2})
