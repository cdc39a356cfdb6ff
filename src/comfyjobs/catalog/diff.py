"""What changed between two catalog versions: workflows, their parameters (each attribute a request is
checked against), the template inputs each parameter patches, the templates themselves, and LoRAs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from comfyjobs.manifests.registry import Parameter, Registry, Target, Workflow

Kind = Literal["added", "removed", "changed"]

# Parameter attributes compared, as `catalog diff` names them.
_ATTRIBUTES = (
    ("type", "type"),
    ("required", "required"),
    ("default", "default"),
    ("min", "minimum"),
    ("max", "maximum"),
    ("max_length", "max_length"),
    ("choices", "choices"),
    ("choices_from", "choices_from"),
    ("nullable", "nullable"),
    ("fixed", "fixed"),
    ("value", "value"),
    ("description", "description"),
)


@dataclass(frozen=True)
class Change:
    kind: Kind
    workflow: str | None  # None: a LoRA's
    what: str  # "workflow", "parameter seed", "parameter seed.default", "input seed -> node 3 ...", ...
    before: Any = None
    after: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        mark = {"added": "+", "removed": "-", "changed": "~"}[self.kind]
        where = f"{self.workflow}: " if self.workflow else ""
        if self.kind == "changed":
            return f"{mark} {where}{self.what}: {self.before!r} -> {self.after!r}"
        return f"{mark} {where}{self.what}"


def _target(workflow: Workflow, target: Target) -> str:
    node = workflow.template.get(target.node_id, {})
    return f"node {target.node_id} ({node.get('class_type', '?')}).{target.input}"


def _parameter_changes(wid: str, a: Workflow, b: Workflow, name: str) -> list[Change]:
    pa, pb = a.parameters[name], b.parameters[name]
    out = []
    for label, attribute in _ATTRIBUTES:
        before, after = getattr(pa, attribute), getattr(pb, attribute)
        if before != after:
            out.append(Change("changed", wid, f"parameter {name}.{label}", _plain(before), _plain(after)))
    inputs_a = {_target(a, t) for t in pa.targets}
    inputs_b = {_target(b, t) for t in pb.targets}
    out += [Change("removed", wid, f"input {name} -> {t}") for t in sorted(inputs_a - inputs_b)]
    out += [Change("added", wid, f"input {name} -> {t}") for t in sorted(inputs_b - inputs_a)]
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _added_parameter(wid: str, workflow: Workflow, param: Parameter, kind: Kind) -> list[Change]:
    out = [Change(kind, wid, f"parameter {param.name} ({param.type})")]
    out += [Change(kind, wid, f"input {param.name} -> {_target(workflow, t)}") for t in param.targets]
    return out


def _template_changes(wid: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    out = []
    for node_id in sorted(set(a) | set(b)):
        na: Any = a.get(node_id)
        nb: Any = b.get(node_id)
        if na == nb:
            continue
        if na is None:
            out.append(Change("added", wid, f"template node {node_id} ({nb.get('class_type', '?')})"))
            continue
        if nb is None:
            out.append(Change("removed", wid, f"template node {node_id} ({na.get('class_type', '?')})"))
            continue
        if na.get("class_type") != nb.get("class_type"):
            what = f"template node {node_id}.class_type"
            out.append(Change("changed", wid, what, na.get("class_type"), nb.get("class_type")))
        ia, ib = na.get("inputs", {}), nb.get("inputs", {})
        for name in sorted(set(ia) | set(ib)):
            if ia.get(name) != ib.get(name):
                what = f"template node {node_id} ({nb.get('class_type', '?')}).{name}"
                out.append(Change("changed", wid, what, ia.get(name), ib.get(name)))
    return out


def _workflow_changes(wid: str, a: Workflow, b: Workflow) -> list[Change]:
    out = []
    for label, before, after in (
        ("description", a.description, b.description),
        ("time_limit_s", a.time_limit_s, b.time_limit_s),
        ("template file", a.template_file, b.template_file),
        ("requires.labels", sorted(a.labels), sorted(b.labels)),
    ):
        if before != after:
            out.append(Change("changed", wid, label, before, after))
    for name in a.parameters:
        if name not in b.parameters:
            out += _added_parameter(wid, a, a.parameters[name], "removed")
    for name in b.parameters:
        if name not in a.parameters:
            out += _added_parameter(wid, b, b.parameters[name], "added")
        else:
            out += _parameter_changes(wid, a, b, name)
    return out + _template_changes(wid, a.template, b.template)


def diff(a: Registry, b: Registry) -> list[Change]:
    """From ``a`` to ``b``; empty when they serve the same requests the same way."""
    out = []
    for wid in a.workflows:
        if wid not in b.workflows:
            out.append(Change("removed", wid, "workflow"))
    for wid, workflow in b.workflows.items():
        if wid not in a.workflows:
            out.append(Change("added", wid, "workflow"))
            for param in workflow.parameters.values():
                out += _added_parameter(wid, workflow, param, "added")
        else:
            out += _workflow_changes(wid, a.workflows[wid], workflow)
    for name in sorted(set(a.loras) | set(b.loras)):
        la, lb = a.loras.get(name), b.loras.get(name)
        if la == lb:
            continue
        if la is None or lb is None:
            out.append(Change("added" if la is None else "removed", None, f"lora {name}"))
        else:
            out.append(Change("changed", None, f"lora {name}", la.model_dump(), lb.model_dump()))
    return out
