"""Can every public workflow run on this ComfyUI? Checked against `/object_info` alone.

For each workflow: every node class exists; every parameter target is an input of its node, of a type
the parameter's values fit, with bounds and choices ComfyUI accepts (else a request the API accepted
would fail inside ComfyUI); every model file the workflow can reference (template values, parameter
defaults and fixed values, static choices) is one ComfyUI offers. Workers run this when their ComfyUI
is up and publish the result in their heartbeat; `comfyjobs doctor` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from comfyjobs.manifests.model_values import source_of
from comfyjobs.manifests.registry import Parameter, Registry, Workflow
from comfyjobs.storage.models import MODEL_EXTENSIONS

# Which ComfyUI input types can hold a parameter's values.
_COMPATIBLE_TYPES = {
    "integer": {"INT", "FLOAT"},
    "number": {"FLOAT"},
    "string": {"STRING", "COMBO"},
    "boolean": {"BOOLEAN"},
    "choice": {"COMBO", "STRING"},
    # Loader inputs list the files in ComfyUI's input folder; the worker uploads ours before the run.
    "image": {"COMBO", "STRING"},
    "mask": {"COMBO", "STRING"},
    "video": {"COMBO", "STRING"},
    "audio": {"COMBO", "STRING"},
    "file": {"COMBO", "STRING"},
    # A model loader's file list; a URL's file is downloaded and linked into the folder per job.
    "model": {"COMBO", "STRING"},
}


class WorkflowAvailability(BaseModel):
    """Published by workers and shown by GET /workflows; `ready` is false when anything is missing."""

    ready: bool
    missing_nodes: list[str] = []
    missing_models: list[str] = []
    problems: list[str] = []


InputSpec = tuple[str, list[Any] | None, dict[str, Any]]


@dataclass
class _Findings:
    missing_nodes: set[str] = field(default_factory=set)
    missing_models: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def result(self) -> WorkflowAvailability:
        return WorkflowAvailability(
            ready=not (self.missing_nodes or self.missing_models or self.problems),
            missing_nodes=sorted(self.missing_nodes),
            missing_models=sorted(self.missing_models),
            problems=self.problems,
        )


def _input_spec(node_info: Mapping[str, Any], name: str) -> InputSpec | None:
    """(type, combo options or None, options dict) of one input, in either object_info shape."""
    inputs = node_info.get("input", {})
    for group in ("required", "optional"):
        spec = inputs.get(group, {}).get(name)
        if spec is None:
            continue
        kind = spec[0]
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if isinstance(kind, list):  # classic COMBO: the choices are the type
            return "COMBO", list(kind), opts
        if kind == "COMBO":  # comfy_api nodes: choices under "options"
            return "COMBO", list(opts.get("options", [])), opts
        return str(kind), None, opts
    return None


def _looks_like_model(value: Any) -> bool:
    return isinstance(value, str) and any(value.lower().endswith(ext) for ext in MODEL_EXTENSIONS)


def _values_of(param: Parameter) -> Iterable[Any]:
    if param.fixed:
        yield param.value
        return
    if not param.required and param.default is not None and not param.random_default:
        yield param.default
    if param.choices is not None:
        yield from param.choices


def _check_param_target(param: Parameter, where: str, spec: InputSpec, found: _Findings) -> None:
    kind, options, opts = spec
    if kind not in _COMPATIBLE_TYPES[param.type]:
        found.problems.append(f"{where}: a {param.type} parameter cannot fill a {kind} input")
        return
    if kind in ("INT", "FLOAT"):
        low, high = opts.get("min"), opts.get("max")
        if low is not None and (param.minimum is None or param.minimum < low):
            found.problems.append(f"{where}: ComfyUI's min is {low}, the manifest allows {param.minimum}")
        if high is not None and (param.maximum is None or param.maximum > high):
            found.problems.append(f"{where}: ComfyUI's max is {high}, the manifest allows {param.maximum}")
    if options is None or param.is_media:
        return  # a media input's file is uploaded per job: not in ComfyUI's list beforehand
    for value in _values_of(param):
        if value is None or value in options or (param.is_model and source_of(value) is not None):
            continue
        if param.model_folder is not None or _looks_like_model(value):
            found.missing_models.add(f"{param.model_folder or 'models'}/{value}")
        else:
            found.problems.append(f"{where}: ComfyUI does not offer {value!r}")


def check_workflow(workflow: Workflow, object_info: Mapping[str, Any]) -> WorkflowAvailability:
    found = _Findings()
    targeted: set[tuple[str, str]] = set()
    for param in workflow.parameters.values():
        for target in param.targets:
            targeted.add((target.node_id, target.input))
            class_type = workflow.template[target.node_id]["class_type"]
            if class_type not in object_info:
                continue  # reported below, once
            where = f"{param.name} → node {target.node_id} ({class_type}).{target.input}"
            spec = _input_spec(object_info[class_type], target.input)
            if spec is None:
                found.problems.append(f"{where}: ComfyUI has no such input")
                continue
            _check_param_target(param, where, spec, found)

    for node_id, node in workflow.template.items():
        class_type = node["class_type"]
        if class_type not in object_info:
            found.missing_nodes.add(class_type)
            continue
        for name, value in node.get("inputs", {}).items():
            if (node_id, name) in targeted or isinstance(value, list):
                continue  # written by a parameter, or a link
            spec = _input_spec(object_info[class_type], name)
            if spec is None or spec[1] is None or value in spec[1]:
                continue
            if _looks_like_model(value):
                found.missing_models.add(str(value))
            else:
                found.problems.append(
                    f"node {node_id} ({class_type}).{name}: ComfyUI does not offer {value!r}"
                )
    return found.result()


def check_registry(registry: Registry, object_info: Mapping[str, Any]) -> dict[str, WorkflowAvailability]:
    return {wid: check_workflow(w, object_info) for wid, w in registry.workflows.items()}
