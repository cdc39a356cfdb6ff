"""load_registry: the shipped manifests, every ManifestError path, and per-workflow overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyjobs.errors import InvalidParamsError, ManifestError
from comfyjobs.jobs.delivery import longest_job_s, visibility_timeout_s
from comfyjobs.manifests.params import validate_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Target
from comfyjobs.settings import Settings

from .helpers import (
    BASE_FILE,
    LORAS_FILE,
    WORKFLOWS_FILE,
    base_params,
    load,
    load_shipped,
    load_workflow,
    problems,
    template,
    write_manifests,
)

W = "workflows.w.parameters"  # key prefix of the fixture workflow's parameters

# --- the shipped manifests ---------------------------------------------------------------------------


def test_shipped_manifests_load_every_workflow() -> None:
    registry = load_shipped()
    assert list(registry.workflows) == [
        "txt2img", "tiny", "img2img", "inpaint", "upscale", "upscale-model", "tiny-media",
    ]  # fmt: skip
    assert list(registry.workflows["txt2img"].parameters) == [
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
    assert list(registry.workflows["tiny"].parameters) == ["width", "height", "batch_size", "color"]
    assert list(registry.workflows["img2img"].parameters) == [
        "image",
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "cfg",
        "sampler",
        "scheduler",
        "denoise",
        "checkpoint",
    ]
    assert list(registry.workflows["inpaint"].parameters) == [
        "image",
        "mask",
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "cfg",
        "sampler",
        "scheduler",
        "grow_mask_by",
        "checkpoint",
    ]
    assert list(registry.workflows["upscale"].parameters) == ["image", "scale_by", "upscale_method"]
    assert list(registry.workflows["upscale-model"].parameters) == ["image", "upscale_model"]
    assert set(registry.loras) == {"example-pixel-art.safetensors"}


def test_shipped_txt2img_details() -> None:
    wf = load_shipped().workflow("txt2img")
    assert wf.template_file == "txt2img.json"
    assert wf.prompt_parameter == "prompt"  # it has a `loras` choice and a prompt
    p = wf.parameters
    assert p["prompt"].required is True
    assert p["prompt"].default is None
    assert p["seed"].required is False
    assert p["seed"].default == "random"
    assert p["seed"].random_default is True
    assert p["prompt"].targets == (Target(node_id="6", input="text"),)
    assert p["negative_prompt"].targets == (Target(node_id="7", input="text"),)
    assert p["lora"].targets == (Target(node_id="10", input="lora_name", bypass_when_null=("model", "clip")),)
    assert p["lora_strength"].targets == (
        Target(node_id="10", input="strength_model"),
        Target(node_id="10", input="strength_clip"),
    )
    assert p["checkpoint"].choices_from == "checkpoints"
    assert p["lora"].nullable is True
    assert set(wf.request_model.model_fields) == set(p)


def test_shipped_tiny_overrides_apply() -> None:
    wf = load_shipped().workflow("tiny")
    assert wf.prompt_parameter is None
    width = wf.parameters["width"]
    assert (width.default, width.minimum, width.maximum) == (64, 1, 2048)
    assert width.targets == (Target(node_id="1", input="width"),)
    assert wf.parameters["batch_size"].targets == (Target(node_id="1", input="batch_size"),)
    assert wf.parameters["color"].maximum == 16777215


def test_registry_unknown_workflow_lists_known() -> None:
    from comfyjobs.errors import WorkflowNotFoundError

    with pytest.raises(
        WorkflowNotFoundError,
        match=r"unknown workflow .nope. \(known: img2img, inpaint, tiny, tiny-media, txt2img, upscale, "
        r"upscale-model\)",
    ):
        load_shipped().workflow("nope")


# --- the fixture itself --------------------------------------------------------------------------------


def test_fixture_loads_and_loras_file_is_optional(tmp_path: Path) -> None:
    registry = load(write_manifests(tmp_path))
    assert not (tmp_path / LORAS_FILE).exists()
    assert registry.loras == {}
    wf = registry.workflow("w")
    assert list(wf.parameters) == list(base_params())
    assert wf.prompt_parameter == "prompt"
    assert wf.parameters["sampler"].targets == (Target(node_id="4", input="sampler_name"),)


def test_loras_file_is_read(tmp_path: Path) -> None:
    loras = {"loras": {"a.safetensors": {"prompt_prefix": "px,", "examples": ["a cat"]}}}
    registry = load(write_manifests(tmp_path, loras=loras))
    assert registry.loras["a.safetensors"].prompt_prefix == "px,"
    assert registry.loras["a.safetensors"].examples == ["a cat"]


def test_empty_base_file_means_no_parameters(tmp_path: Path) -> None:
    write_manifests(tmp_path, base="", workflow={"template": "t.json"})
    assert load(tmp_path).workflow("w").parameters == {}


# --- files ---------------------------------------------------------------------------------------------


def test_missing_base_yaml(tmp_path: Path) -> None:
    write_manifests(tmp_path)
    (tmp_path / BASE_FILE).unlink()
    found = problems(tmp_path)
    assert found[0] == (BASE_FILE, "(file)", "file not found")
    # with no base.yaml, the workflow's parameters are unknown too (and said so)
    assert (WORKFLOWS_FILE, f"{W}.prompt", "not a parameter of base.yaml") in found


def test_missing_workflows_yaml(tmp_path: Path) -> None:
    write_manifests(tmp_path)
    (tmp_path / WORKFLOWS_FILE).unlink()
    assert problems(tmp_path) == [(WORKFLOWS_FILE, "(file)", "file not found")]


def test_problem_file_is_the_full_path(tmp_path: Path) -> None:
    write_manifests(tmp_path)
    (tmp_path / WORKFLOWS_FILE).unlink()
    with pytest.raises(ManifestError) as info:
        load(tmp_path)
    assert info.value.problems[0].file == str(tmp_path / WORKFLOWS_FILE)
    assert info.value.code == "manifest_invalid"
    assert f"{tmp_path / WORKFLOWS_FILE}: (file): file not found" in info.value.message


@pytest.mark.parametrize("file", [BASE_FILE, WORKFLOWS_FILE, LORAS_FILE])
def test_invalid_yaml(tmp_path: Path, file: str) -> None:
    write_manifests(tmp_path, loras={"loras": {}})
    (tmp_path / file).write_text("parameters: [unclosed\n  - x: : y\n", encoding="utf-8")
    found = [p for p in problems(tmp_path) if p[0] == file]
    assert len(found) == 1
    assert found[0][:2] == (file, "(file)")
    assert found[0][2].startswith("not valid YAML: ")


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflows="- a\n- b\n")
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, "(top level)", "Input should be a valid dictionary or instance of WorkflowsFile")
    ]


def test_no_workflows_declared(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflows={"workflows": {}})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, "workflows", "no workflows declared")]


# --- unknown keys, at every level ------------------------------------------------------------------------


def test_unknown_key_at_base_top_level(tmp_path: Path) -> None:
    write_manifests(tmp_path, base={"parameters": base_params(), "foo": 1})
    assert (BASE_FILE, "foo", "unknown key") in problems(tmp_path)


def test_unknown_key_at_workflows_top_level(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflows={"workflows": {"w": {"template": "t.json"}}, "bar": 2})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, "bar", "unknown key")]


def test_unknown_key_in_loras_file(tmp_path: Path) -> None:
    loras = {"loras": {"a.safetensors": {"prompt_prefix": "x", "weight": 1}}, "extra": True}
    write_manifests(tmp_path, loras=loras)
    assert sorted(problems(tmp_path)) == [
        (LORAS_FILE, "extra", "unknown key"),
        (LORAS_FILE, "loras.a.safetensors.weight", "unknown key"),
    ]


def test_unknown_key_in_parameter(tmp_path: Path) -> None:
    params = base_params()
    params["steps"]["bogus"] = 1
    write_manifests(tmp_path, params=params)
    assert (BASE_FILE, "parameters.steps.bogus", "unknown key") in problems(tmp_path)


def test_unknown_key_in_target(tmp_path: Path) -> None:
    params = base_params()
    params["cfg"]["targets"][0]["zz"] = 1
    write_manifests(tmp_path, params=params)
    assert (BASE_FILE, "parameters.cfg.targets[0].zz", "unknown key") in problems(tmp_path)


def test_unknown_key_in_workflow(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": None}, "foo": 1})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, "workflows.w.foo", "unknown key")]


def test_unknown_key_in_override(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"mn": 1}}})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, f"{W}.steps.mn", "unknown key")]


def test_unknown_key_in_override_target(tmp_path: Path) -> None:
    override = {"targets": [{"node": "4", "input": "steps", "foo": 1}]}
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": override}})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, f"{W}.steps.targets[0].foo", "unknown key")]


def test_unknown_key_in_lora(tmp_path: Path) -> None:
    write_manifests(tmp_path, loras={"loras": {"x": {"prefix": "a"}}})
    assert problems(tmp_path) == [(LORAS_FILE, "loras.x.prefix", "unknown key")]


@pytest.mark.parametrize(
    "target", [{"input": "steps"}, {"node": "4", "title": "Sampler", "input": "steps"}], ids=["none", "both"]
)
def test_target_needs_exactly_one_locator(tmp_path: Path, target: dict[str, Any]) -> None:
    params = base_params()
    params["steps"]["targets"] = [target]
    write_manifests(tmp_path, params=params)
    assert (
        BASE_FILE,
        "parameters.steps.targets[0]",
        "Value error, give exactly one of `node` (node id) or `title` (node title)",
    ) in problems(tmp_path)


def test_max_length_must_be_positive(tmp_path: Path) -> None:
    params = base_params()
    params["prompt"]["max_length"] = 0
    write_manifests(tmp_path, params=params)
    assert (
        BASE_FILE,
        "parameters.prompt.max_length",
        "Input should be greater than or equal to 1",
    ) in problems(tmp_path)


# --- cross-file checks --------------------------------------------------------------------------------


def test_workflow_names_parameter_not_in_base(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": None, "nope": None}})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, f"{W}.nope", "not a parameter of base.yaml")]


def _with_target(tmp_path: Path, name: str, target: dict[str, Any]) -> list[tuple[str, str, str]]:
    params = base_params()
    params[name]["targets"] = [target]
    write_manifests(tmp_path, params=params)
    return problems(tmp_path)


def test_target_node_not_in_template(tmp_path: Path) -> None:
    assert _with_target(tmp_path, "steps", {"node": "99", "input": "steps"}) == [
        (WORKFLOWS_FILE, f"{W}.steps.targets[0].node", "node '99' is not in the template")
    ]


def test_target_title_matches_no_node(tmp_path: Path) -> None:
    assert _with_target(tmp_path, "steps", {"title": "KSampler", "input": "steps"}) == [
        (WORKFLOWS_FILE, f"{W}.steps.targets[0].title", "no node has the title 'KSampler'")
    ]


def test_target_title_matches_two_nodes(tmp_path: Path) -> None:
    params = base_params()
    params["prefix"] = {
        "type": "string",
        "default": "x",
        "targets": [{"title": "Save", "input": "filename_prefix"}],
    }
    write_manifests(tmp_path, params=params)
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"{W}.prefix.targets[0].title", "2 nodes (5, 6) have the title 'Save'")
    ]


def test_target_input_not_on_node_lists_inputs(tmp_path: Path) -> None:
    assert _with_target(tmp_path, "steps", {"node": "4", "input": "step"}) == [
        (
            WORKFLOWS_FILE,
            f"{W}.steps.targets[0].input",
            "node 4 (Sampler) has no input 'step' "
            "(inputs: cfg, model, positive, sampler_name, seed, steps, tiled)",
        )
    ]


def test_target_input_on_node_without_inputs(tmp_path: Path) -> None:
    tpl = template()
    tpl["7"] = {"class_type": "Note"}
    params = base_params()
    params["steps"]["targets"].append({"node": "7", "input": "text"})
    write_manifests(tmp_path, params=params, templates={"t.json": tpl})
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"{W}.steps.targets[1].input", "node 7 (Note) has no input 'text' (inputs: none)")
    ]


# --- templates ------------------------------------------------------------------------------------------


def _template_problems(tmp_path: Path, name: str, content: Any = None) -> list[tuple[str, str, str]]:
    templates = {"t.json": template()} if content is None else {name: content}
    write_manifests(tmp_path, workflow={"template": name, "parameters": {"steps": None}}, templates=templates)
    return problems(tmp_path)


def test_template_file_missing(tmp_path: Path) -> None:
    assert _template_problems(tmp_path, "gone.json") == [
        (
            WORKFLOWS_FILE,
            "workflows.w.template",
            f"template file not found: {tmp_path / 'workflows' / 'gone.json'}",
        )
    ]


def test_template_not_json(tmp_path: Path) -> None:
    [(file, key, reason)] = _template_problems(tmp_path, "t.json", "{not json")
    assert (file, key) == (WORKFLOWS_FILE, "workflows.w.template")
    assert reason.startswith("template is not valid JSON: ")


def test_template_ui_format(tmp_path: Path) -> None:
    ui = {"last_node_id": 9, "nodes": [{"id": 1, "type": "KSampler"}], "links": [[1, 1, 0, 2, 0, "MODEL"]]}
    assert _template_problems(tmp_path, "ui.json", ui) == [
        (
            WORKFLOWS_FILE,
            "workflows.w.template",
            "template is a UI-format export; export it with 'Export (API)' in ComfyUI",
        )
    ]


@pytest.mark.parametrize("content", [[1, 2], {}, "3"], ids=["list", "empty", "number"])
def test_template_not_an_object_of_nodes(tmp_path: Path, content: Any) -> None:
    assert _template_problems(tmp_path, "x.json", content) == [
        (
            WORKFLOWS_FILE,
            "workflows.w.template",
            "template must be a JSON object of node id -> node (ComfyUI API format)",
        )
    ]


@pytest.mark.parametrize(
    "node", [{"inputs": {}}, {"class_type": 3}, "KSampler"], ids=["no-class", "class-not-str", "not-dict"]
)
def test_template_node_without_class_type(tmp_path: Path, node: Any) -> None:
    assert _template_problems(tmp_path, "x.json", {"1": {"class_type": "A"}, "12": node}) == [
        (WORKFLOWS_FILE, "workflows.w.template", "node '12' has no class_type (ComfyUI API format expected)")
    ]


def test_template_inputs_not_an_object(tmp_path: Path) -> None:
    assert _template_problems(tmp_path, "x.json", {"1": {"class_type": "A", "inputs": [1]}}) == [
        (WORKFLOWS_FILE, "workflows.w.template", "node '1': inputs must be an object")
    ]


@pytest.mark.parametrize("name", ["../x.json", "sub/t.json", "ABSOLUTE"])
def test_template_path_must_stay_in_folder(tmp_path: Path, name: str) -> None:
    # the files exist, so only the path rule can refuse them
    (tmp_path / "x.json").write_text(json.dumps(template()), encoding="utf-8")
    (tmp_path / "workflows" / "sub").mkdir(parents=True)
    (tmp_path / "workflows" / "sub" / "t.json").write_text(json.dumps(template()), encoding="utf-8")
    if name == "ABSOLUTE":
        name = str(tmp_path / "x.json")
    write_manifests(tmp_path, workflow={"template": name, "parameters": {"steps": None}})
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, "workflows.w.template", "must be a file name inside the workflows folder")
    ]


def test_template_naming_a_directory_is_a_manifest_problem(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "..", "parameters": {"steps": None}})
    [(file, key, _reason)] = problems(tmp_path)
    assert (file, key) == (WORKFLOWS_FILE, "workflows.w.template")


# --- parameter shapes -----------------------------------------------------------------------------------


def _shape_problems(tmp_path: Path, name: str, **changes: Any) -> list[tuple[str, str, str]]:
    params = base_params()
    params[name].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del params[name][key]
    write_manifests(tmp_path, params=params)
    return problems(tmp_path)


def test_choice_with_neither_choices_nor_choices_from(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "sampler", choices=None) == [
        (
            WORKFLOWS_FILE,
            f"{W}.sampler",
            "a choice needs exactly one of `choices` (a list) or `choices_from` (a folder)",
        )
    ]


def test_choice_with_both_choices_and_choices_from(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "sampler", choices_from="checkpoints") == [
        (
            WORKFLOWS_FILE,
            f"{W}.sampler",
            "a choice needs exactly one of `choices` (a list) or `choices_from` (a folder)",
        )
    ]


def test_choice_with_empty_choices(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "sampler", choices=[]) == [
        (WORKFLOWS_FILE, f"{W}.sampler.choices", "must not be empty")
    ]


def test_choices_from_unknown_folder(tmp_path: Path) -> None:
    found = _shape_problems(tmp_path, "checkpoint", choices_from="models")
    assert len([p for p in found if p[:2] == (BASE_FILE, "parameters.checkpoint.choices_from")]) == 1


@pytest.mark.parametrize(
    ("name", "changes", "kind"),
    [
        ("steps", {"choices": [1, 2]}, "integer"),
        ("prompt", {"choices_from": "checkpoints"}, "string"),
    ],
)
def test_choices_on_non_choice_type(tmp_path: Path, name: str, changes: dict[str, Any], kind: str) -> None:
    assert _shape_problems(tmp_path, name, **changes) == [
        (WORKFLOWS_FILE, f"{W}.{name}", f"`choices`/`choices_from` need type: choice (type is {kind})")
    ]


def test_min_greater_than_max(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "steps", min=10, max=5) == [
        (WORKFLOWS_FILE, f"{W}.steps", "min (10) is greater than max (5)")
    ]


def test_min_greater_than_max_through_override(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"min": 60}}})
    assert problems(tmp_path) == [(WORKFLOWS_FILE, f"{W}.steps", "min (60) is greater than max (50)")]


@pytest.mark.parametrize("changes", [{"min": 1}, {"max": 10}])
def test_min_max_on_string(tmp_path: Path, changes: dict[str, Any]) -> None:
    assert _shape_problems(tmp_path, "prompt", **changes) == [
        (WORKFLOWS_FILE, f"{W}.prompt", "min/max apply to integer and number parameters (type is string)")
    ]


def test_min_max_on_boolean(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "tiled", max=1) == [
        (WORKFLOWS_FILE, f"{W}.tiled", "min/max apply to integer and number parameters (type is boolean)")
    ]


def test_max_length_on_integer(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "steps", max_length=3) == [
        (WORKFLOWS_FILE, f"{W}.steps", "max_length applies to string parameters (type is integer)")
    ]


@pytest.mark.parametrize("name", ["cfg", "prompt", "sampler"])
def test_random_default_on_non_integer(tmp_path: Path, name: str) -> None:
    assert _shape_problems(tmp_path, name, default="random") == [
        (WORKFLOWS_FILE, f"{W}.{name}.default", "`random` is only a default for integer parameters (seeds)")
    ]


def test_default_above_max(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "steps", default=51) == [
        (
            WORKFLOWS_FILE,
            f"{W}.steps.default",
            "51 is not a valid integer: Input should be less than or equal to 50",
        )
    ]


def test_default_below_min_number(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "cfg", default=-0.5) == [
        (
            WORKFLOWS_FILE,
            f"{W}.cfg.default",
            "-0.5 is not a valid number: Input should be greater than or equal to 0",
        )
    ]


def test_default_not_in_choices(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "sampler", default="lms") == [
        (
            WORKFLOWS_FILE,
            f"{W}.sampler.default",
            "'lms' is not a valid choice: Input should be 'euler' or 'heun'",
        )
    ]


def test_default_of_wrong_type(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "tiled", default="maybe") == [
        (
            WORKFLOWS_FILE,
            f"{W}.tiled.default",
            "'maybe' is not a valid boolean: must be a boolean: true or false",
        )
    ]


def test_null_default_on_non_nullable_optional(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"default": None}}})
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"{W}.steps.default", "None is not a valid integer: Input should be a valid integer")
    ]


def test_fixed_value_invalid(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"value": 0}}})
    assert problems(tmp_path) == [
        (
            WORKFLOWS_FILE,
            f"{W}.steps.value",
            "0 is not a valid integer: Input should be greater than or equal to 1",
        )
    ]


def test_fixed_value_of_wrong_type_on_required_parameter(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"prompt": {"value": 5}}})
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"{W}.prompt.value", "5 is not a valid string: Input should be a valid string")
    ]


def test_fixed_random_value_never_reaches_the_graph(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"seed": {"value": "random"}}})
    try:
        wf = load(tmp_path).workflow("w")
    except ManifestError:
        return  # refusing it at load time is a fine fix too
    assert isinstance(build_graph(wf, {}, {})["4"]["inputs"]["seed"], int)


def test_parameter_with_no_targets(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "steps", targets=[]) == [
        (WORKFLOWS_FILE, f"{W}.steps.targets", "no targets: the parameter would change nothing")
    ]


def test_override_with_empty_targets(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"targets": []}}})
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"{W}.steps.targets", "no targets: the parameter would change nothing")
    ]


def test_override_with_null_targets(tmp_path: Path) -> None:
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": {"targets": None}}})
    assert (WORKFLOWS_FILE, f"{W}.steps.targets", "no targets: the parameter would change nothing") in (
        problems(tmp_path)
    )


def test_bypass_when_null_on_non_nullable(tmp_path: Path) -> None:
    assert _shape_problems(tmp_path, "lora", nullable=False, default="a.safetensors") == [
        (
            WORKFLOWS_FILE,
            f"{W}.lora.targets[0].bypass_when_null",
            "only a nullable parameter can bypass a node",
        )
    ]


@pytest.mark.parametrize("name", ["lora_name", "vae"], ids=["not-a-link", "no-such-input"])
def test_bypass_when_null_names_input_that_is_not_a_link(tmp_path: Path, name: str) -> None:
    target = {"title": "LoRA", "input": "lora_name", "bypass_when_null": ["model", name]}
    assert _with_target(tmp_path, "lora", target) == [
        (WORKFLOWS_FILE, f"{W}.lora.targets[0].bypass_when_null", f"input {name!r} of node 2 is not a link")
    ]


def test_prompt_parameter_missing(tmp_path: Path) -> None:
    workflow = {"template": "t.json", "parameters": {"steps": None}, "prompt_parameter": "prompt"}
    write_manifests(tmp_path, workflow=workflow)
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, "workflows.w.prompt_parameter", "'prompt' is not one of its parameters")
    ]


def test_prompt_parameter_not_a_string(tmp_path: Path) -> None:
    workflow = {
        "template": "t.json",
        "parameters": {"steps": None, "prompt": None},
        "prompt_parameter": "steps",
    }
    write_manifests(tmp_path, workflow=workflow)
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, "workflows.w.prompt_parameter", "'steps' must be a string parameter")
    ]


def test_prompt_parameter_defaults_to_prompt_only_with_a_lora_choice(tmp_path: Path) -> None:
    workflows = {
        "workflows": {
            "with-lora": {"template": "t.json", "parameters": {"prompt": None, "lora": None}},
            "without": {"template": "t.json", "parameters": {"prompt": None}},
            "explicit": {"template": "t.json", "parameters": {"prompt": None}, "prompt_parameter": "prompt"},
        }
    }
    registry = load(write_manifests(tmp_path, workflows=workflows))
    assert registry.workflow("with-lora").prompt_parameter == "prompt"
    assert registry.workflow("without").prompt_parameter is None
    assert registry.workflow("explicit").prompt_parameter == "prompt"


@pytest.mark.parametrize("workflow_id", ["-w", "bad id", "w.1", "é"])
def test_bad_workflow_id(tmp_path: Path, workflow_id: str) -> None:
    write_manifests(tmp_path, workflows={"workflows": {workflow_id: {"template": "t.json"}}})
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"workflows.{workflow_id}", "workflow ids are letters, digits, '-' and '_'")
    ]


def test_good_workflow_ids(tmp_path: Path) -> None:
    ids = ["a", "A-b_2", "9x"]
    write_manifests(tmp_path, workflows={"workflows": {i: {"template": "t.json"} for i in ids}})
    assert list(load(tmp_path).workflows) == ids


@pytest.mark.parametrize("name", ["Steps", "2x", "a-b", "_ok_but_no"])
def test_bad_parameter_name(tmp_path: Path, name: str) -> None:
    params = base_params()
    params[name] = {"type": "integer", "default": 1, "targets": [{"node": "4", "input": "steps"}]}
    write_manifests(tmp_path, params=params, workflow={"template": "t.json", "parameters": {"steps": None}})
    if name.startswith("_"):  # a leading underscore is allowed by the rule
        load(tmp_path)
        return
    assert problems(tmp_path) == [
        (BASE_FILE, f"parameters.{name}", "names are lower-case letters, digits and '_'")
    ]


def test_several_problems_reported_together(tmp_path: Path) -> None:
    params = base_params()
    params["Bad"] = {"type": "integer", "default": 1, "targets": [{"node": "4", "input": "steps"}]}
    params["steps"]["targets"] = [{"node": "99", "input": "steps"}]
    params["cfg"]["targets"] = [{"node": "4", "input": "cfgg"}]
    workflows = {
        "workflows": {
            "w": {"template": "t.json", "parameters": {"steps": None, "cfg": None, "nope": None}},
            "v": {"template": "missing.json"},
            "u": {"template": "t.json", "parameters": {"sampler": {"default": "lms"}}},
        }
    }
    write_manifests(tmp_path, params=params, workflows=workflows)
    with pytest.raises(ManifestError) as info:
        load(tmp_path)
    found = [(Path(p.file).name, p.key, p.reason) for p in info.value.problems]
    assert found == [
        ("base.yaml", "parameters.Bad", "names are lower-case letters, digits and '_'"),
        ("workflows.yaml", f"{W}.steps.targets[0].node", "node '99' is not in the template"),
        (
            "workflows.yaml",
            f"{W}.cfg.targets[0].input",
            "node 4 (Sampler) has no input 'cfgg' "
            "(inputs: cfg, model, positive, sampler_name, seed, steps, tiled)",
        ),
        ("workflows.yaml", f"{W}.nope", "not a parameter of base.yaml"),
        (
            "workflows.yaml",
            "workflows.v.template",
            f"template file not found: {tmp_path / 'workflows' / 'missing.json'}",
        ),
        (
            "workflows.yaml",
            "workflows.u.parameters.sampler.default",
            "'lms' is not a valid choice: Input should be 'euler' or 'heun'",
        ),
    ]
    for problem in info.value.problems:
        assert str(problem) in info.value.message


def test_bad_defaults_of_two_parameters_both_reported(tmp_path: Path) -> None:
    params = base_params()
    params["steps"]["default"] = 500
    params["cfg"]["default"] = 500
    write_manifests(tmp_path, params=params)
    assert [key for _file, key, _reason in problems(tmp_path)] == [f"{W}.steps.default", f"{W}.cfg.default"]


def test_prompt_parameter_problem_not_reported_twice(tmp_path: Path) -> None:
    params = base_params()
    params["prompt"]["min"] = 1
    workflow = {"template": "t.json", "parameters": {"prompt": None}, "prompt_parameter": "prompt"}
    write_manifests(tmp_path, params=params, workflow=workflow)
    assert problems(tmp_path) == [
        (WORKFLOWS_FILE, f"{W}.prompt", "min/max apply to integer and number parameters (type is string)")
    ]


# --- overrides ------------------------------------------------------------------------------------------


def test_override_default_min_max_take_effect(tmp_path: Path) -> None:
    override = {"default": 5, "min": 2, "max": 9, "description": "Fewer steps."}
    wf = load(
        write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"steps": override}})
    ).workflow("w")
    steps = wf.parameters["steps"]
    assert (steps.default, steps.minimum, steps.maximum, steps.description) == (5, 2, 9, "Fewer steps.")
    assert validate_params(wf, {}).model_dump() == {"steps": 5}
    assert validate_params(wf, {"steps": 9}).model_dump() == {"steps": 9}
    for bad, reason in ((10, "less than or equal to 9"), (1, "greater than or equal to 2")):
        with pytest.raises(InvalidParamsError) as info:
            validate_params(wf, {"steps": bad})
        assert [(p.field, p.reason) for p in info.value.problems] == [
            ("params.steps", f"Input should be {reason}")
        ]


def test_override_choices_take_effect(tmp_path: Path) -> None:
    override = {"choices": ["heun", "lms"], "default": "lms"}
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"sampler": override}})
    wf = load(tmp_path).workflow("w")
    assert wf.parameters["sampler"].choices == ("heun", "lms")
    assert validate_params(wf, {}).model_dump() == {"sampler": "lms"}
    with pytest.raises(InvalidParamsError) as info:
        validate_params(wf, {"sampler": "euler"})
    assert [(p.field, p.reason) for p in info.value.problems] == [
        ("params.sampler", "must be one of 'heun' or 'lms'")
    ]


def test_override_required_take_effect(tmp_path: Path) -> None:
    overrides = {"cfg": {"required": True}, "prompt": {"required": False, "default": "hi"}}
    wf = load_workflow(tmp_path, overrides)
    assert wf.parameters["cfg"].required is True
    assert wf.parameters["cfg"].default is None  # a required parameter has no default
    assert wf.parameters["prompt"].required is False
    assert wf.parameters["prompt"].default == "hi"
    with pytest.raises(InvalidParamsError) as info:
        validate_params(wf, {})
    assert [(p.field, p.reason) for p in info.value.problems] == [("params.cfg", "Field required")]
    assert validate_params(wf, {"cfg": 1}).model_dump() == {"cfg": 1.0, "prompt": "hi"}


def test_override_targets_replace_base_targets(tmp_path: Path) -> None:
    override = {"targets": [{"node": "4", "input": "seed"}, {"title": "Loader", "input": "ckpt_name"}]}
    write_manifests(tmp_path, workflow={"template": "t.json", "parameters": {"prompt": override}})
    assert load(tmp_path).workflow("w").parameters["prompt"].targets == (
        Target(node_id="4", input="seed"),
        Target(node_id="1", input="ckpt_name"),
    )


def test_override_is_per_workflow(tmp_path: Path) -> None:
    workflows = {
        "workflows": {
            "a": {"template": "t.json", "parameters": {"steps": {"default": 3, "max": 4}}},
            "b": {"template": "t.json", "parameters": {"steps": None}},
        }
    }
    registry = load(write_manifests(tmp_path, workflows=workflows))
    a, b = registry.workflow("a").parameters["steps"], registry.workflow("b").parameters["steps"]
    assert (a.default, a.maximum) == (3, 4)
    assert (b.default, b.maximum) == (20, 50)


def test_value_fixes_and_hides_the_parameter(tmp_path: Path) -> None:
    parameters = {"steps": {"value": 7}, "cfg": None}
    wf = load_workflow(tmp_path, parameters)
    steps = wf.parameters["steps"]
    assert (steps.fixed, steps.value) == (True, 7)
    assert [p.name for p in wf.public_parameters] == ["cfg"]
    assert set(wf.request_model.model_fields) == {"cfg"}
    assert "steps" not in wf.request_model.model_json_schema()["properties"]
    with pytest.raises(InvalidParamsError) as info:
        validate_params(wf, {"steps": 7})
    assert [(p.field, p.reason) for p in info.value.problems] == [("params.steps", "unknown parameter")]
    assert build_graph(wf, {"cfg": 1.5}, {})["4"]["inputs"]["steps"] == 7


def test_value_can_fix_a_required_parameter(tmp_path: Path) -> None:
    parameters = {"prompt": {"value": "a fixed prompt"}}
    wf = load_workflow(tmp_path, parameters)
    assert wf.public_parameters == []
    assert build_graph(wf, {}, {})["3"]["inputs"]["text"] == "a fixed prompt"


def test_a_workflow_time_limit_is_kept_and_sizes_the_visibility_timeout(tmp_path: Path) -> None:
    names = base_params()
    registry = load(
        write_manifests(
            tmp_path,
            workflow={"template": "t.json", "time_limit_s": 7200, "parameters": dict.fromkeys(names)},
        )
    )
    assert registry.workflow("w").time_limit_s == 7200
    settings = Settings.load(redis_url="redis://127.0.0.1:1/0", job_time_limit_s=60)
    assert longest_job_s(settings, registry) == settings.comfyui_start_timeout_s + 7200
    assert visibility_timeout_s(settings, registry) > longest_job_s(settings, registry)


def test_a_non_positive_time_limit_is_refused(tmp_path: Path) -> None:
    names = base_params()
    root = write_manifests(
        tmp_path, workflow={"template": "t.json", "time_limit_s": 0, "parameters": dict.fromkeys(names)}
    )
    with pytest.raises(ManifestError) as raised:
        load(root)
    assert "time_limit_s" in str(raised.value)
