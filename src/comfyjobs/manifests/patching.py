"""Turns a workflow template and resolved parameters into the graph ComfyUI runs.

The cached template is deep-copied first and never written to; every target of every parameter is set.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from comfyjobs.errors import FieldProblem, InvalidParamsError
from comfyjobs.manifests.model_values import linked_name, source_of
from comfyjobs.manifests.registry import Target, Workflow
from comfyjobs.manifests.schema import LoraSpec


def apply_lora_prompt(prompt: str, lora: LoraSpec) -> str:
    """`prefix, prompt, suffix`, without doubled commas or blank parts."""
    parts = [p.strip().strip(",").strip() for p in (lora.prompt_prefix, prompt, lora.prompt_suffix)]
    return ", ".join(p for p in parts if p)


def _bypass(graph: dict[str, Any], target: Target) -> None:
    """Removes the node and points each consumer of its output i at the input named at position i."""
    passthrough = target.bypass_when_null or ()
    node = graph.pop(target.node_id, None)
    if node is None:  # another target already removed it
        return
    for other in graph.values():
        inputs = other.get("inputs", {})
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and value[0] == target.node_id:
                index = int(value[1])
                if index >= len(passthrough):
                    raise ValueError(
                        f"node {target.node_id}: output {index} is used but bypass_when_null names "
                        f"only {len(passthrough)} inputs"
                    )
                inputs[name] = copy.deepcopy(node["inputs"][passthrough[index]])


def build_graph(
    workflow: Workflow, params: Mapping[str, Any], loras: Mapping[str, LoraSpec]
) -> dict[str, Any]:
    missing = [p.name for p in workflow.public_parameters if p.name not in params]
    if missing:
        raise InvalidParamsError([FieldProblem(f"params.{name}", "missing") for name in missing])
    values = {p.name: (p.value if p.fixed else params[p.name]) for p in workflow.parameters.values()}
    for param in workflow.model_parameters:  # a URL: the name its file is linked under (the worker's)
        if (source := source_of(values[param.name])) is not None:
            values[param.name] = linked_name(source)

    if workflow.prompt_parameter is not None:
        for param in workflow.parameters.values():
            lora = loras.get(values[param.name]) if param.choices_from == "loras" else None
            if lora is not None:
                prompt = values[workflow.prompt_parameter]
                values[workflow.prompt_parameter] = apply_lora_prompt(prompt or "", lora)

    graph: dict[str, Any] = copy.deepcopy(dict(workflow.template))
    bypasses: list[Target] = []
    for param in workflow.parameters.values():
        value = values[param.name]
        for target in param.targets:
            if value is None and target.bypass_when_null is not None:
                bypasses.append(target)
            elif target.node_id in graph:
                graph[target.node_id]["inputs"][target.input] = value
    for target in bypasses:
        _bypass(graph, target)
    return graph
