"""Loads base.yaml, workflows.yaml, loras.yaml and the templates they name, and checks them together.

Every problem is collected (file, key, reason) and raised as one ManifestError, so an operator fixes a
broken manifest in one pass instead of one restart per typo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from comfyjobs.errors import ManifestError, ManifestProblem
from comfyjobs.manifests.params import build_request_model, value_type
from comfyjobs.manifests.registry import RANDOM, Parameter, Registry, Target, Workflow
from comfyjobs.manifests.schema import (
    MEDIA_TYPES,
    BaseFile,
    LorasFile,
    ParameterOverride,
    ParameterSpec,
    TargetSpec,
    WorkflowsFile,
    WorkflowSpec,
)
from comfyjobs.manifests.sources import (
    BASE_FILE,
    LORAS_FILE,
    MISSING,
    WORKFLOWS_FILE,
    DirSources,
    SourceError,
    Sources,
    check_template,
    read_template_file,
)

_PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_WORKFLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

FileModel = TypeVar("FileModel", bound=BaseModel)


class _Problems:
    def __init__(self) -> None:
        self.items: list[ManifestProblem] = []

    def add(self, file: str, key: str, reason: str) -> None:
        self.items.append(ManifestProblem(file=file, key=key, reason=reason))


def _loc_to_key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _read_yaml(
    sources: Sources, name: str, model: type[FileModel], problems: _Problems, *, required: bool
) -> FileModel:
    label = sources.manifest_label(name)
    try:
        data = sources.manifest(name)
    except SourceError as exc:
        problems.add(label, "(file)", exc.reason)
        return model()
    if data is MISSING:
        if required:
            problems.add(label, "(file)", "file not found")
        return model()
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        for err in exc.errors():
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.add(label, _loc_to_key(err["loc"]), reason)
        return model()


def load_template(path: Path) -> dict[str, Any]:
    """Reads an API-format workflow. Raises ValueError with a reason a person can act on."""
    return check_template(read_template_file(path))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _resolve_target(
    spec: TargetSpec, template: Mapping[str, Any], nullable: bool, problems: _Problems, file: str, key: str
) -> Target | None:
    if spec.node is not None:
        node_id = spec.node
        if node_id not in template:
            problems.add(file, f"{key}.node", f"node {node_id!r} is not in the template")
            return None
    else:
        matches = [nid for nid, n in template.items() if n.get("_meta", {}).get("title") == spec.title]
        if len(matches) != 1:
            why = "no node has" if not matches else f"{len(matches)} nodes ({', '.join(matches)}) have"
            problems.add(file, f"{key}.title", f"{why} the title {spec.title!r}")
            return None
        node_id = matches[0]
    node = template[node_id]
    inputs = node.get("inputs", {})
    if spec.input not in inputs:
        known = ", ".join(sorted(inputs)) or "none"
        problems.add(
            file,
            f"{key}.input",
            f"node {node_id} ({node['class_type']}) has no input {spec.input!r} (inputs: {known})",
        )
        return None
    bypass = None
    if spec.bypass_when_null is not None:
        if not nullable:
            problems.add(file, f"{key}.bypass_when_null", "only a nullable parameter can bypass a node")
        for name in spec.bypass_when_null:
            if not _is_link(inputs.get(name)):
                problems.add(
                    file, f"{key}.bypass_when_null", f"input {name!r} of node {node_id} is not a link"
                )
        bypass = tuple(spec.bypass_when_null)
    return Target(node_id=node_id, input=spec.input, bypass_when_null=bypass)


def _merge(base: ParameterSpec, override: ParameterOverride | None) -> dict[str, Any]:
    merged = {name: getattr(base, name) for name in base.model_fields_set | {"type", "nullable"}}
    merged.setdefault("default", None)
    merged["has_default"] = "default" in base.model_fields_set
    merged["targets"] = base.targets
    merged["fixed"] = False
    if override is not None:
        for name in override.model_fields_set:
            if name == "value":
                merged["fixed"] = True
                merged["value"] = override.value
            elif name == "required":
                merged["required"] = override.required
            else:
                merged[name] = getattr(override, name)
                if name == "default":
                    merged["has_default"] = True
    return merged


def _check_shape(m: dict[str, Any], problems: _Problems, file: str, key: str) -> None:
    kind = m["type"]
    if kind == "choice":
        if (m.get("choices") is None) == (m.get("choices_from") is None):
            problems.add(
                file, key, "a choice needs exactly one of `choices` (a list) or `choices_from` (a folder)"
            )
        elif m.get("choices") is not None and not m["choices"]:
            problems.add(file, f"{key}.choices", "must not be empty")
    elif m.get("choices") is not None or m.get("choices_from") is not None:
        problems.add(file, key, f"`choices`/`choices_from` need type: choice (type is {kind})")
    if kind not in ("integer", "number") and (m.get("min") is not None or m.get("max") is not None):
        problems.add(file, key, f"min/max apply to integer and number parameters (type is {kind})")
    if m.get("min") is not None and m.get("max") is not None and m["min"] > m["max"]:
        problems.add(file, key, f"min ({m['min']}) is greater than max ({m['max']})")
    if kind != "string" and m.get("max_length") is not None:
        problems.add(file, key, f"max_length applies to string parameters (type is {kind})")
    if (kind == "model") != (m.get("folder") is not None):
        problems.add(file, key, "a model parameter needs `folder` (its model folder), and only it has one")
    if kind in MEDIA_TYPES and m.get("default") is not None:
        problems.add(
            file, f"{key}.default", f"{kind} parameters have no default (null, or leave it required)"
        )
    if m.get("default") == RANDOM and kind != "integer":
        problems.add(file, f"{key}.default", "`random` is only a default for integer parameters (seeds)")


def _check_value(
    param: Parameter, value: Any, problems: _Problems, file: str, key: str, *, allow_random: bool = True
) -> None:
    if value == RANDOM and param.random_default and allow_random:
        return
    try:
        TypeAdapter(value_type(param)).validate_python(value)
    except ValidationError as exc:
        problems.add(file, key, f"{value!r} is not a valid {param.type}: {exc.errors()[0]['msg']}")


def _build_workflow(
    workflow_id: str,
    spec: WorkflowSpec,
    base: Mapping[str, ParameterSpec],
    sources: Sources,
    problems: _Problems,
    file: str,
) -> Workflow | None:
    key = f"workflows.{workflow_id}"
    start = len(problems.items)
    if not _WORKFLOW_ID.match(workflow_id):
        problems.add(file, key, "workflow ids are letters, digits, '-' and '_'")
    if Path(spec.template).name != spec.template:
        problems.add(file, f"{key}.template", "must be a file name inside the workflows folder")
        return None
    try:
        template = check_template(sources.template(spec.template))
    except ValueError as exc:
        problems.add(file, f"{key}.template", str(exc))
        return None

    params: dict[str, Parameter] = {}
    for name, override in spec.parameters.items():
        pkey = f"{key}.parameters.{name}"
        param_start = len(problems.items)
        if name not in base:
            problems.add(file, pkey, f"not a parameter of {BASE_FILE}")
            continue
        m = _merge(base[name], override)
        _check_shape(m, problems, file, pkey)
        nullable = bool(m.get("nullable"))
        targets = []
        target_specs = m["targets"] or []
        if not target_specs:
            problems.add(file, f"{pkey}.targets", "no targets: the parameter would change nothing")
        for i, tspec in enumerate(target_specs):
            target = _resolve_target(tspec, template, nullable, problems, file, f"{pkey}.targets[{i}]")
            if target is not None:
                targets.append(target)
        required = m.get("required")
        if required is None:
            required = not m["has_default"]
        param = Parameter(
            name=name,
            type=m["type"],
            description=m.get("description", ""),
            required=bool(required),
            default=None if required else m.get("default"),
            minimum=m.get("min"),
            maximum=m.get("max"),
            max_length=m.get("max_length"),
            choices=tuple(m["choices"]) if m.get("choices") is not None else None,
            choices_from=m.get("choices_from"),
            folder=m.get("folder"),
            nullable=nullable,
            example=m.get("example"),
            targets=tuple(targets),
            fixed=m["fixed"],
            value=m.get("value"),
        )
        if len(problems.items) > param_start:
            continue
        if param.fixed:
            _check_value(param, param.value, problems, file, f"{pkey}.value", allow_random=False)
        elif not param.required:
            _check_value(param, param.default, problems, file, f"{pkey}.default")
        params[name] = param

    prompt_parameter = spec.prompt_parameter
    uses_loras = any(p.choices_from == "loras" for p in params.values())
    if prompt_parameter is not None and prompt_parameter not in spec.parameters:
        problems.add(file, f"{key}.prompt_parameter", f"{prompt_parameter!r} is not one of its parameters")
    elif prompt_parameter is None and uses_loras and "prompt" in params:
        prompt_parameter = "prompt"
    if prompt_parameter in params and params[prompt_parameter].type != "string":
        problems.add(file, f"{key}.prompt_parameter", f"{prompt_parameter!r} must be a string parameter")

    if len(problems.items) > start:
        return None
    try:
        request_model = build_request_model(workflow_id, params)
    except Exception as exc:  # a schema pydantic cannot build is a manifest problem, said as such
        problems.add(file, f"{key}.parameters", f"cannot build the request schema: {exc}")
        return None
    return Workflow(
        id=workflow_id,
        description=spec.description,
        template_file=spec.template,
        template=template,
        parameters=params,
        prompt_parameter=prompt_parameter,
        time_limit_s=spec.time_limit_s,
        request_model=request_model,
        labels=frozenset(spec.requires.labels),
        models=tuple(spec.models),
    )


def load_registry(manifest_dir: Path, workflow_dir: Path) -> Registry:
    """The registry of the manifests and templates in these folders (``comfyjobs check``)."""
    return build_registry(DirSources(manifest_dir, workflow_dir))


def build_registry(sources: Sources) -> Registry:
    """Every problem of ``sources`` at once (ManifestError), or their registry."""
    problems = _Problems()
    base_path, workflows_path = sources.manifest_label(BASE_FILE), sources.manifest_label(WORKFLOWS_FILE)
    base = _read_yaml(sources, BASE_FILE, BaseFile, problems, required=True)
    workflows_file = _read_yaml(sources, WORKFLOWS_FILE, WorkflowsFile, problems, required=True)
    loras = _read_yaml(sources, LORAS_FILE, LorasFile, problems, required=False)

    for name in base.parameters:
        if not _PARAM_NAME.match(name):
            problems.add(base_path, f"parameters.{name}", "names are lower-case letters, digits and '_'")

    workflows: dict[str, Workflow] = {}
    for workflow_id, spec in workflows_file.workflows.items():
        workflow = _build_workflow(workflow_id, spec, base.parameters, sources, problems, workflows_path)
        if workflow is not None:
            workflows[workflow_id] = workflow
    if not workflows_file.workflows and not problems.items:
        problems.add(workflows_path, "workflows", "no workflows declared")

    if problems.items:
        raise ManifestError(problems.items)
    return Registry(workflows=workflows, loras=dict(loras.loras))
