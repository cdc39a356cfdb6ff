"""Checks a ComfyUI API-format graph against a worker's ``/object_info`` before it is queued.

Pure: no I/O, no ComfyUI import. The rules follow ComfyUI 0.3.75's ``execution.validate_prompt`` and
``validate_inputs``: every node must name a known class; a prompt needs an output node; inputs are checked
only on the output nodes and the nodes they depend on (ComfyUI never looks at the others, so a stray node
with a stale file name does not refuse a graph); any list value is a link and must be
``[node id, output index]``; linked types fit when their comma-separated alternatives overlap or either side
is ``*``; INT/FLOAT literals keep within min/max; a COMBO literal must be one of the choices. Where this
check deliberately differs from ComfyUI, a comment says so.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

GRAPH = "_graph"  # key for problems of the graph as a whole
_SHOWN_CHOICES = 5
_KINDS = {"INT": "an integer", "FLOAT": "a number", "BOOLEAN": "true or false", "STRING": "a string"}


@dataclass(frozen=True)
class NodeProblem:
    field: str | None  # the input's name, or None for the node as a whole
    reason: str  # a machine code: not_a_node, unknown_class_type, missing_input, bad_link, ...
    message: str  # one short sentence naming node id, class and input


def is_ui_format(graph: object) -> bool:
    """True for ComfyUI's UI/"save" export (a dict with a "nodes" list and a "links" list), not API format."""
    return (
        isinstance(graph, Mapping)
        and isinstance(graph.get("nodes"), list)
        and isinstance(graph.get("links"), list)
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spec(entry: Any) -> tuple[Any, Mapping[str, Any]]:
    """(type, options) of one input spec: ``[TYPE]`` or ``[TYPE, {options}]``."""
    if not isinstance(entry, list | tuple) or not entry:
        return None, {}
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
    return entry[0], opts


def _is_combo(typ: Any) -> bool:
    return isinstance(typ, list) or typ == "COMBO"


def _alternatives(typ: str) -> set[str]:
    return {t.strip() for t in typ.split(",")}


def _literal_ok(typ: str, value: Any) -> bool:
    # Stricter than ComfyUI, which coerces with int()/float()/str()/bool() (bool("false") is True there and
    # int(2.7) is 2): a literal of the wrong JSON type is refused rather than silently changed.
    if typ == "INT":
        return _is_int(value)
    if typ == "FLOAT":
        return _is_int(value) or (isinstance(value, float) and not math.isnan(value))
    return isinstance(value, bool if typ == "BOOLEAN" else str)


def _types_fit(out_type: Any, in_type: Any) -> bool:
    """Whether an output of ``out_type`` may feed an input of ``in_type``."""
    if isinstance(out_type, str) and "*" in _alternatives(out_type):
        return True
    if isinstance(in_type, str) and "*" in _alternatives(in_type):
        return True
    if _is_combo(in_type):
        # Lenient on purpose: ComfyUI 0.3.75 compares a list-typed (old-style) COMBO input with the output
        # type by equality, so it refuses a "COMBO" output there although the frontend makes such links;
        # any list-typed output or COMBO output is taken as a choice, whatever its list holds.
        return isinstance(out_type, list) or (
            isinstance(out_type, str) and "COMBO" in _alternatives(out_type)
        )
    if isinstance(out_type, list):
        return False  # a choice feeding a non-choice input: ComfyUI refuses it too
    if not isinstance(out_type, str) or not isinstance(in_type, str):
        return True  # a shape /object_info does not normally have: not ours to judge
    if in_type.startswith("COMFY_") and in_type.endswith("_V3"):
        return True  # V3 dynamic inputs (autogrow, match-type): their real type is only known at run time
    return bool(_alternatives(out_type) & _alternatives(in_type))


class _Checker:
    def __init__(self, graph: Mapping[str, Any], info: Mapping[str, Any], staged: Collection[Any]) -> None:
        self.graph = graph
        self.object_info = info
        self.staged = staged
        self.ids = {str(key) for key in graph}
        self.problems: dict[str, list[NodeProblem]] = {}
        # node id -> (class_type, inputs, class info), for well-formed nodes of a known class only
        self.nodes: dict[str, tuple[str, Mapping[str, Any], Mapping[str, Any]]] = {}

    def add(self, node_id: str, field: str | None, reason: str, message: str) -> None:
        self.problems.setdefault(node_id, []).append(NodeProblem(field, reason, message))

    def problem(self, node_id: str, name: str | None, reason: str, text: str) -> None:
        self.add(node_id, name, reason, f"node {node_id} ({self.nodes[node_id][0]}): {text}")

    def scan(self, allow: Collection[str] | None, deny: Collection[str]) -> bool:
        """Checks each node's shape, class and policy; returns whether some node's class is not known."""
        unsure = False
        for key, node in self.graph.items():
            node_id = str(key)
            class_type = node.get("class_type") if isinstance(node, Mapping) else None
            inputs = node.get("inputs") if isinstance(node, Mapping) else None
            if not isinstance(class_type, str) or not isinstance(inputs, Mapping):
                unsure = True
                text = f'node {node_id}: not a node (needs a "class_type" string and an "inputs" object)'
                self.add(node_id, None, "not_a_node", text)
                continue
            info = self.object_info.get(class_type)
            if not isinstance(info, Mapping):
                unsure = True
                text = f"node {node_id} ({class_type}): this node class is not installed on the workers"
                self.add(node_id, None, "unknown_class_type", text)
                continue
            self.nodes[node_id] = (class_type, inputs, info)
            if allow is not None and class_type not in allow:
                refused = "is not in the operator's RAW_WORKFLOW_NODE_ALLOWLIST"
            elif class_type in deny:
                refused = "is refused by the operator's RAW_WORKFLOW_NODE_DENYLIST"
            else:
                continue
            self.problem(node_id, None, "class_type_not_allowed", f"class_type {class_type!r} {refused}")
        return unsure

    def needed(self, outputs: list[str]) -> list[str]:
        """The output nodes and every node they depend on through links, in graph order."""
        seen = set(outputs)
        todo = list(outputs)
        while todo:
            for value in self.nodes[todo.pop()][1].values():
                source = value[0] if isinstance(value, list) and len(value) == 2 else None
                source = source if isinstance(source, str) else None
                if source in self.nodes and source not in seen:
                    seen.add(source)
                    todo.append(source)
        return [node_id for node_id in self.nodes if node_id in seen]

    def check_inputs(self, node_id: str) -> None:
        _, inputs, info = self.nodes[node_id]
        groups = info.get("input")
        if not isinstance(groups, Mapping):
            return
        for category in ("required", "optional"):  # "hidden" inputs are filled in by ComfyUI itself
            specs = groups.get(category)
            if not isinstance(specs, Mapping):
                continue
            for name, spec in specs.items():
                if name not in inputs:
                    if category == "required":
                        self.problem(node_id, name, "missing_input", f"required input {name!r} is missing")
                    continue
                value = inputs[name]
                typ, opts = _spec(spec)
                if isinstance(value, Mapping) and "__value__" in value:  # a wrapped (list) literal
                    self.check_literal(node_id, name, value["__value__"], typ, opts)
                elif isinstance(value, list):
                    self.check_link(node_id, name, value, typ)
                else:
                    self.check_literal(node_id, name, value, typ, opts)

    def check_link(self, node_id: str, name: str, value: list[Any], typ: Any) -> None:
        if len(value) != 2 or not isinstance(value[0], str) or not _is_int(value[1]):
            text = f"input {name!r} has a malformed link {_show(value)} (expected [node id, output index])"
            self.problem(node_id, name, "bad_link", text)
            return
        source, index = value
        if source not in self.ids:
            text = f"input {name!r} links to node {source}, which is not in the graph"
            self.problem(node_id, name, "bad_link", text)
            return
        if source not in self.nodes:
            return  # that node is reported on its own
        source_class, _, source_info = self.nodes[source]
        outputs = source_info.get("output")
        outputs = outputs if isinstance(outputs, list) else []
        if not 0 <= index < len(outputs):
            text = f"input {name!r} links to output {index} of node {source} ({source_class}): no such output"
            self.problem(node_id, name, "bad_link", text)
            return
        if not _types_fit(outputs[index], typ):
            wanted, got = ("COMBO" if isinstance(t, list) else t for t in (typ, outputs[index]))
            text = (
                f"input {name!r} takes {wanted}, but node {source} ({source_class}) output {index} is {got}"
            )
            self.problem(node_id, name, "type_mismatch", text)

    def check_literal(self, node_id: str, name: str, value: Any, typ: Any, opts: Mapping[str, Any]) -> None:
        if isinstance(typ, str) and typ in _KINDS:
            if not _literal_ok(typ, value):
                text = f"input {name!r} must be {_KINDS[typ]}, not {_show(value)}"
                self.problem(node_id, name, "bad_value", text)
            elif typ in ("INT", "FLOAT"):
                self.check_range(node_id, name, value, opts)
            return
        if not _is_combo(typ) or (node_id, name) in self.staged:
            return  # other types are normally linked; ComfyUI passes such literals on unchecked, so do we
        if isinstance(typ, list):
            choices: list[Any] = typ
        else:
            # New-style COMBO: ComfyUI 0.3.75 leaves these to the node, where a value outside the options
            # fails at run time, so they are checked here too, unless the frontend fetches the options
            # ("remote") or several may be chosen ("multiselect").
            options = opts.get("options")
            if not isinstance(options, list) or opts.get("remote") or opts.get("multiselect"):
                return
            choices = options
        if value in choices:
            return
        if choices:
            extra = len(choices) - _SHOWN_CHOICES
            shown = ", ".join(_show(choice) for choice in choices[:_SHOWN_CHOICES])
            offered = f"use one of {shown}" + (f" (and {extra} more)" if extra > 0 else "")
        else:
            offered = "the workers offer no choices for it"
        text = f"input {name!r} is {_show(value)}, not a choice; {offered}"
        self.problem(node_id, name, "not_a_choice", text)

    def check_range(self, node_id: str, name: str, value: float, opts: Mapping[str, Any]) -> None:
        low, high = opts.get("min"), opts.get("max")
        if isinstance(low, int | float) and value < low:
            text = f"input {name!r} is {value}, below the minimum {low}"
        elif isinstance(high, int | float) and value > high:
            text = f"input {name!r} is {value}, above the maximum {high}"
        else:
            return
        self.problem(node_id, name, "out_of_range", text)


def check_graph(
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
    *,
    staged: Collection[tuple[str, str]] = (),
    allow: Collection[str] | None = None,
    deny: Collection[str] = (),
) -> dict[str, list[NodeProblem]]:
    """Problems, per node id (or GRAPH), that would keep a worker from running ``graph``; {} if none.

    ``staged``: (node id, input name) pairs whose value an uploaded file replaces before queueing, so it is
    not checked against the choices. ``allow`` (when given) and ``deny`` limit the class_types.
    """
    if not isinstance(graph, Mapping) or is_ui_format(graph):
        why = "a UI-format export; use ComfyUI's 'Export (API)'" if is_ui_format(graph) else "not an object"
        text = f"the workflow is {why}: expected an API-format object of nodes keyed by node id"
        return {GRAPH: [NodeProblem(None, "not_a_graph", text)]}
    if not graph:
        return {GRAPH: [NodeProblem(None, "empty_graph", "the workflow has no nodes")]}
    checker = _Checker(graph, object_info, staged)
    unsure = checker.scan(allow, deny)
    outputs = [node_id for node_id, (_, _, info) in checker.nodes.items() if info.get("output_node") is True]
    if not outputs and not unsure:
        # Only when every class is known: a node of an unknown class may have been meant as the output.
        text = "the workflow has no output node (such as SaveImage), so ComfyUI would run nothing"
        checker.add(GRAPH, None, "no_outputs", text)
    # Without an output node every node is checked, so the refusal still carries per-node details.
    for node_id in checker.needed(outputs) if outputs else list(checker.nodes):
        checker.check_inputs(node_id)
    return checker.problems
