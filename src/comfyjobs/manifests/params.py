"""Per-workflow request models, and turning a request into the parameters a job records.

Each workflow gets a pydantic model generated from its parameters: unknown names are rejected, bounds and
static choices are part of the schema (so `/docs` shows them), booleans are parsed strictly. Checks that
need the file system (a `choices_from` value must be a file in the models folder) and `random` seeds are
done by ``resolve_params``, which the API runs off the event loop.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError, create_model
from pydantic_core import PydanticCustomError

from comfyjobs.errors import FieldProblem, InvalidParamsError
from comfyjobs.manifests.model_values import ModelRef, source_of
from comfyjobs.manifests.registry import RANDOM, Parameter, Workflow

# Seeds drawn by the server stay within what every ComfyUI sampler accepts.
RANDOM_SEED_MAX = 2**32 - 1

_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}


def _parse_bool(value: Any) -> Any:
    """`"false"` is false: strings are matched by word, never by truthiness; anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise PydanticCustomError("bool_parsing", "must be a boolean: true or false")


def _plain_number(value: Any) -> Any:
    """JSON `true` must not become 1, and NaN/infinity are no one's intended parameter value."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "must be a number, not a boolean")
    as_float = value
    if isinstance(value, str):
        try:
            as_float = float(value)
        except ValueError:
            return value  # pydantic says why
    if isinstance(as_float, float) and not math.isfinite(as_float):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return value


def value_type(param: Parameter) -> Any:
    """The annotated Python type that validates one value of this parameter."""

    base: Any
    # Bounds come before the before-validator so pydantic applies them natively and /docs shows them.
    bounds = annotated_types.Interval(ge=param.minimum, le=param.maximum)
    if param.type == "string":
        base = Annotated[str, Field(max_length=param.max_length)]
    elif param.type == "integer":
        base = Annotated[int, bounds, BeforeValidator(_plain_number)]
    elif param.type == "number":
        base = Annotated[float, bounds, BeforeValidator(_plain_number)]
    elif param.type == "boolean":
        base = Annotated[StrictBool, BeforeValidator(_parse_bool)]
    elif param.is_media:  # an asset id, an http(s) URL or a data: URL; checked by media.resolve
        base = Annotated[str, Field(min_length=1)]
    elif param.is_model:  # a file name in its folder, or a URL ({url, sha256}): models on demand
        base = Annotated[str, Field(min_length=1, max_length=2048)] | ModelRef
    elif param.choices is not None:
        base = Literal[param.choices]
    else:  # choices_from a model folder: any name here, checked against the folder by resolve_params
        base = Annotated[str, Field(min_length=1)]
    if param.random_default and not param.fixed:
        base = base | Literal["random"]
    if param.nullable:
        base = base | None
    return base


def build_request_model(workflow_id: str, params: Mapping[str, Parameter]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for param in params.values():
        if param.fixed:
            continue
        extra: dict[str, Any] = {"description": param.description or None}
        if param.example is not None:
            extra["examples"] = [param.example]
        default: Any = ... if param.required else param.default
        fields[param.name] = (value_type(param), Field(default, **extra))
    model_name = "".join(part.capitalize() for part in workflow_id.replace("-", "_").split("_")) + "Params"
    return create_model(
        model_name,
        __config__=ConfigDict(extra="forbid", title=f"Parameters of workflow {workflow_id}"),
        **fields,
    )


def problems_from_validation(exc: ValidationError, prefix: str = "params") -> list[FieldProblem]:
    """One problem per field. Parameters are flat, so the field is the first part of the location; the
    rest names union members (seed: integer | "random"), whose first complaint is the useful one."""
    by_field: dict[str, str] = {}
    for err in exc.errors():
        field = f"{prefix}.{err['loc'][0]}" if err["loc"] else prefix
        if err["type"] == "extra_forbidden":
            reason = "unknown parameter"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            reason = f"must be one of {err['ctx']['expected']}"
        else:
            reason = err["msg"]
        by_field.setdefault(field, reason)
    return [FieldProblem(field=f, reason=r) for f, r in by_field.items()]


def validate_params(workflow: Workflow, params: Mapping[str, Any]) -> BaseModel:
    try:
        return workflow.request_model.model_validate(dict(params))
    except ValidationError as exc:
        raise InvalidParamsError(problems_from_validation(exc)) from None


ModelLister = Callable[[str], list[str] | None]  # None: unknown


def resolve_params(workflow: Workflow, request: BaseModel, list_models: ModelLister) -> dict[str, Any]:
    """Every public parameter's final value: defaults filled, `random` seeds drawn, model files checked.

    ``list_models(folder)`` returns the files of a model folder (the API reads them beforehand, off its
    event loop). Media parameters are resolved afterwards, by ``media.resolve``.
    """
    values = request.model_dump()
    problems: list[FieldProblem] = []
    for param in workflow.public_parameters:
        value = values[param.name]
        if value == RANDOM and param.random_default:
            low = int(param.minimum) if param.minimum is not None else 0
            high = int(param.maximum) if param.maximum is not None else RANDOM_SEED_MAX
            values[param.name] = low + secrets.randbelow(min(high - low, RANDOM_SEED_MAX) + 1)
        elif (folder := param.model_folder) is not None and value is not None:
            if param.is_model and source_of(value) is not None:
                continue  # a URL: checked by api.submit against MODEL_URL_ALLOWLIST
            available = list_models(folder)
            if available is None:
                continue  # not known yet (no worker has reported): the job waits for one that has it
            if value not in available:
                shown = ", ".join(available[:20]) or "none installed"
                also = " or an http(s) URL" if param.is_model else ""
                problems.append(
                    FieldProblem(
                        field=f"params.{param.name}",
                        reason=f"{value!r} is not in the {folder} folder{also} (available: {shown})",
                    )
                )
    if problems:
        raise InvalidParamsError(problems)
    return values
