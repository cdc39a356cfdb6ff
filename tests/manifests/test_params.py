"""The generated request models (validate_params) and resolve_params: defaults, random seeds, model files."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from comfyjobs.errors import FieldProblem, InvalidParamsError
from comfyjobs.manifests.params import RANDOM_SEED_MAX, resolve_params, validate_params
from comfyjobs.manifests.registry import Workflow

from .helpers import base_params, load, load_shipped, write_manifests


@pytest.fixture
def wf(tmp_path: Path) -> Workflow:
    return load(write_manifests(tmp_path)).workflow("w")


def _problems(workflow: Workflow, params: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidParamsError) as info:
        validate_params(workflow, params)
    assert info.value.code == "invalid_params"
    return [(p.field, p.reason) for p in info.value.problems]


def _valid(workflow: Workflow, **params: Any) -> dict[str, Any]:
    return validate_params(workflow, {"prompt": "p", **params}).model_dump()


class _Lister:
    """A list_models stand-in that records which folders were asked for."""

    def __init__(self, **folders: list[str]) -> None:
        self.folders = folders
        self.asked: list[str] = []

    def __call__(self, folder: str) -> list[str]:
        self.asked.append(folder)
        return self.folders.get(folder, [])


# --- validate_params --------------------------------------------------------------------------------------


def test_defaults_fill_in(wf: Workflow) -> None:
    assert _valid(wf) == {
        "prompt": "p",
        "seed": "random",
        "steps": 20,
        "cfg": 7.0,
        "sampler": "euler",
        "tiled": False,
        "checkpoint": "a.safetensors",
        "lora": None,
        "lora_strength": 1.0,
    }


def test_unknown_parameter_is_named(wf: Workflow) -> None:
    assert _problems(wf, {"prompt": "p", "stepz": 3, "other": None}) == [
        ("params.stepz", "unknown parameter"),
        ("params.other", "unknown parameter"),
    ]


def test_required_parameter_missing(wf: Workflow) -> None:
    assert _problems(wf, {}) == [("params.prompt", "Field required")]


def test_problems_of_several_fields_reported_together(wf: Workflow) -> None:
    assert _problems(wf, {"steps": 0, "sampler": "lms", "x": 1}) == [
        ("params.prompt", "Field required"),
        ("params.steps", "Input should be greater than or equal to 1"),
        ("params.sampler", "must be one of 'euler' or 'heun'"),
        ("params.x", "unknown parameter"),
    ]


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("steps", 0, "Input should be greater than or equal to 1"),
        ("steps", 51, "Input should be less than or equal to 50"),
        ("cfg", -0.1, "Input should be greater than or equal to 0"),
        ("cfg", 30.01, "Input should be less than or equal to 30"),
        ("seed", -1, "Input should be greater than or equal to 0"),
        ("seed", 2**64, "Input should be less than or equal to 18446744073709551615"),
        ("lora_strength", -4.5, "Input should be greater than or equal to -4"),
    ],
)
def test_bounds_enforced(wf: Workflow, name: str, value: Any, reason: str) -> None:
    assert _problems(wf, {"prompt": "p", name: value}) == [(f"params.{name}", reason)]


@pytest.mark.parametrize(
    ("name", "value"), [("steps", 1), ("steps", 50), ("cfg", 0), ("cfg", 30.0), ("seed", 0)]
)
def test_bounds_inclusive(wf: Workflow, name: str, value: Any) -> None:
    assert _valid(wf, **{name: value})[name] == value


def test_static_choices(wf: Workflow) -> None:
    assert _valid(wf, sampler="heun")["sampler"] == "heun"
    assert _problems(wf, {"prompt": "p", "sampler": "Heun"}) == [
        ("params.sampler", "must be one of 'euler' or 'heun'")
    ]


def test_single_static_choice(tmp_path: Path) -> None:
    params = base_params()
    params["sampler"]["choices"] = ["euler"]
    wf = load(write_manifests(tmp_path, params=params)).workflow("w")
    assert _problems(wf, {"prompt": "p", "sampler": "heun"}) == [("params.sampler", "must be one of 'euler'")]


def test_string_max_length(wf: Workflow) -> None:
    assert _valid(wf, prompt="x" * 20)["prompt"] == "x" * 20
    assert _problems(wf, {"prompt": "x" * 21}) == [
        ("params.prompt", "String should have at most 20 characters")
    ]


def test_string_refuses_a_number(wf: Workflow) -> None:
    assert _problems(wf, {"prompt": 5}) == [("params.prompt", "Input should be a valid string")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("true", True),
        ("False", False),
        (" TRUE ", True),
        ("no", False),
        ("yes", True),
        ("off", False),
        ("on", True),
        ("0", False),
        ("1", True),
        (0, False),
        (1, True),
        (False, False),
        (True, True),
    ],
)
def test_boolean_parsed_strictly(wf: Workflow, value: Any, expected: bool) -> None:
    assert _valid(wf, tiled=value)["tiled"] is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, -1, 1.0, 0.0, None, [], "truee"])
def test_boolean_refuses_everything_else(wf: Workflow, value: Any) -> None:
    assert _problems(wf, {"prompt": "p", "tiled": value}) == [
        ("params.tiled", "must be a boolean: true or false")
    ]


@pytest.mark.parametrize("name", ["steps", "seed", "cfg", "lora_strength"])
@pytest.mark.parametrize("value", [True, False])
def test_numbers_refuse_booleans(wf: Workflow, name: str, value: bool) -> None:
    assert _problems(wf, {"prompt": "p", name: value}) == [
        (f"params.{name}", "must be a number, not a boolean")
    ]


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "Infinity", float("nan"), float("inf"), float("-inf")]
)
@pytest.mark.parametrize("name", ["cfg", "steps"])
def test_numbers_refuse_nan_and_infinity(wf: Workflow, name: str, value: Any) -> None:
    assert _problems(wf, {"prompt": "p", name: value}) == [(f"params.{name}", "must be a finite number")]


def test_numeric_strings_accepted(wf: Workflow) -> None:
    values = _valid(wf, steps="5", cfg="2.5", seed="7")
    assert values["steps"] == 5
    assert type(values["steps"]) is int
    assert values["cfg"] == 2.5
    assert values["seed"] == 7
    assert type(values["seed"]) is int  # an integer, not the string: only "random" stays a string


def test_integer_refuses_fractions_and_words(wf: Workflow) -> None:
    assert _problems(wf, {"prompt": "p", "steps": 5.5, "cfg": "abc"}) == [
        ("params.steps", "Input should be a valid integer, got a number with a fractional part"),
        ("params.cfg", "Input should be a valid number, unable to parse string as a number"),
    ]


def test_integer_accepts_whole_float(wf: Workflow) -> None:
    assert _valid(wf, steps=5.0)["steps"] == 5


def test_seed_accepts_only_the_word_random(wf: Workflow) -> None:
    assert _valid(wf, seed="random")["seed"] == "random"
    [(field, _reason)] = _problems(wf, {"prompt": "p", "seed": "Random"})
    assert field == "params.seed"


def test_seed_random_only_on_random_default_parameters(wf: Workflow) -> None:
    [(field, reason)] = _problems(wf, {"prompt": "p", "steps": "random"})
    assert field == "params.steps"
    assert reason == "Input should be a valid integer, unable to parse string as an integer"


def test_nullable_lora_accepts_none(wf: Workflow) -> None:
    assert _valid(wf, lora=None)["lora"] is None
    assert _valid(wf, lora="b.safetensors")["lora"] == "b.safetensors"


def test_non_nullable_choices_from_refuses_none_and_empty(wf: Workflow) -> None:
    assert _problems(wf, {"prompt": "p", "checkpoint": None, "lora": ""}) == [
        ("params.checkpoint", "Input should be a valid string"),
        ("params.lora", "String should have at least 1 character"),
    ]


# --- resolve_params ---------------------------------------------------------------------------------------


def _resolve(workflow: Workflow, lister: _Lister | None = None, **params: Any) -> dict[str, Any]:
    request = validate_params(workflow, params)
    lister = lister or _Lister(checkpoints=["a.safetensors"], loras=["l.safetensors"])
    return resolve_params(workflow, request, lister)


def test_resolve_returns_every_public_parameter(wf: Workflow) -> None:
    values = _resolve(wf, prompt="p", seed=3)
    assert values == {
        "prompt": "p",
        "seed": 3,
        "steps": 20,
        "cfg": 7.0,
        "sampler": "euler",
        "tiled": False,
        "checkpoint": "a.safetensors",
        "lora": None,
        "lora_strength": 1.0,
    }


def test_random_seed_is_drawn_within_bounds(wf: Workflow) -> None:
    for _ in range(20):
        seed = _resolve(wf, prompt="p")["seed"]
        assert type(seed) is int
        assert 0 <= seed <= RANDOM_SEED_MAX


def test_random_seed_range_is_capped_at_2_32(wf: Workflow, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def top(n: int) -> int:
        asked.append(n)
        return n - 1

    monkeypatch.setattr(secrets, "randbelow", top)
    assert RANDOM_SEED_MAX == 2**32 - 1
    assert _resolve(wf, prompt="p")["seed"] == 2**32 - 1  # max is 2**64-1 in the manifest
    assert asked == [2**32]


def test_random_seed_respects_small_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = base_params()
    params["seed"].update(min=5, max=7)
    wf = load(write_manifests(tmp_path, params=params)).workflow("w")
    asked: list[int] = []

    def low(n: int) -> int:
        asked.append(n)
        return 0

    monkeypatch.setattr(secrets, "randbelow", low)
    assert _resolve(wf, prompt="p")["seed"] == 5
    monkeypatch.setattr(secrets, "randbelow", lambda n: n - 1)
    assert _resolve(wf, prompt="p")["seed"] == 7
    assert asked == [3]
    monkeypatch.undo()
    assert {_resolve(wf, prompt="p")["seed"] for _ in range(60)} <= {5, 6, 7}


def test_explicit_seed_is_kept(wf: Workflow, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(n: int) -> int:
        raise AssertionError("no seed should be drawn")

    monkeypatch.setattr(secrets, "randbelow", never)
    assert _resolve(wf, prompt="p", seed=42)["seed"] == 42
    assert _resolve(wf, prompt="p", seed=2**40)["seed"] == 2**40  # above the draw cap, within the bounds


def test_shipped_txt2img_seed_defaults_to_random(monkeypatch: pytest.MonkeyPatch) -> None:
    wf = load_shipped().workflow("txt2img")
    request = validate_params(wf, {"prompt": "a fox"})
    assert request.model_dump()["seed"] == "random"
    monkeypatch.setattr(secrets, "randbelow", lambda n: 1234)
    values = resolve_params(wf, request, _Lister(checkpoints=["smoke-sd15.safetensors"]))
    assert values["seed"] == 1234


def test_choices_from_value_present(wf: Workflow) -> None:
    lister = _Lister(checkpoints=["a.safetensors", "b.safetensors"], loras=["l.safetensors"])
    values = _resolve(wf, lister, prompt="p", checkpoint="b.safetensors", lora="l.safetensors")
    assert (values["checkpoint"], values["lora"]) == ("b.safetensors", "l.safetensors")
    assert sorted(lister.asked) == ["checkpoints", "loras"]


def test_choices_from_value_absent(wf: Workflow) -> None:
    with pytest.raises(InvalidParamsError) as info:
        _resolve(wf, _Lister(checkpoints=["a.safetensors"]), prompt="p", checkpoint="b.safetensors")
    assert info.value.problems == [
        FieldProblem(
            field="params.checkpoint",
            reason="'b.safetensors' is not in the checkpoints folder (available: a.safetensors)",
        )
    ]


def test_choices_from_absent_in_two_folders(wf: Workflow) -> None:
    with pytest.raises(InvalidParamsError) as info:
        _resolve(wf, _Lister(), prompt="p", checkpoint="c.ckpt", lora="l.safetensors")
    assert [(p.field, p.reason) for p in info.value.problems] == [
        ("params.checkpoint", "'c.ckpt' is not in the checkpoints folder (available: none installed)"),
        ("params.lora", "'l.safetensors' is not in the loras folder (available: none installed)"),
    ]


def test_choices_from_null_lora_does_not_list_the_folder(wf: Workflow) -> None:
    lister = _Lister(checkpoints=["a.safetensors"])
    assert _resolve(wf, lister, prompt="p")["lora"] is None
    assert lister.asked == ["checkpoints"]


def test_choices_from_lists_at_most_20_names(wf: Workflow) -> None:
    names = [f"m{i:02}.safetensors" for i in range(25)]
    with pytest.raises(InvalidParamsError) as info:
        _resolve(wf, _Lister(checkpoints=names), prompt="p", checkpoint="x")
    reason = info.value.problems[0].reason
    assert "m19.safetensors" in reason
    assert "m20.safetensors" not in reason


# --- the JSON schema the API shows ------------------------------------------------------------------------


def test_json_schema(wf: Workflow) -> None:
    schema = wf.request_model.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["title"] == "Parameters of workflow w"
    assert schema["required"] == ["prompt"]
    props = schema["properties"]
    assert set(props) == set(base_params())
    assert props["steps"] == {
        "default": 20,
        "description": "Sampling steps.",
        "maximum": 50,
        "minimum": 1,
        "title": "Steps",
        "type": "integer",
    }
    assert props["cfg"]["description"] == "Guidance."
    assert props["cfg"]["examples"] == [6.5]
    assert (props["cfg"]["minimum"], props["cfg"]["maximum"], props["cfg"]["default"]) == (0.0, 30.0, 7.0)
    assert props["sampler"]["enum"] == ["euler", "heun"]
    assert props["sampler"]["default"] == "euler"
    assert props["prompt"]["maxLength"] == 20
    assert "default" not in props["prompt"]
    assert props["seed"]["default"] == "random"
    assert {"const": "random", "type": "string"} in props["seed"]["anyOf"]
    assert {"type": "null"} in props["lora"]["anyOf"]
    assert props["lora"]["default"] is None


def test_json_schema_single_choice_is_const(tmp_path: Path) -> None:
    params = base_params()
    params["sampler"]["choices"] = ["euler"]
    wf = load(write_manifests(tmp_path, params=params)).workflow("w")
    assert wf.request_model.model_json_schema()["properties"]["sampler"]["const"] == "euler"


def test_request_model_name(tmp_path: Path) -> None:
    workflows = {"workflows": {"my-flow_x": {"template": "t.json", "parameters": {"steps": None}}}}
    wf = load(write_manifests(tmp_path, workflows=workflows)).workflow("my-flow_x")
    assert wf.request_model.__name__ == "MyFlowXParams"
