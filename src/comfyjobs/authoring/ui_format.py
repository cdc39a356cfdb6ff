"""Converts a ComfyUI UI-format export (``{"nodes": [...], "links": [...], ...}``, what the frontend saves)
into the API format that ComfyUI runs and comfyjobs templates are written in.

A UI node keeps its widget values as a positional list, ``widgets_values``, in the order the frontend
created the widgets; only the node definitions (``/object_info``) say which input each position belongs
to. The layout is rebuilt the way ComfyUI's frontend (1.32, the one 0.3.75 ships with) builds it:

- every required, then every optional input whose type is a widget (INT, FLOAT, STRING, BOOLEAN, COMBO or
  a list of choices), in ``input_order``; ``forceInput`` inputs are sockets, not widgets;
- an INT with ``control_after_generate`` (and, when the option is absent, an INT named ``seed`` or
  ``noise_seed``: the frontend's legacy rule) is followed by its "control after generate" value, e.g.
  KSampler's ``[seed, "randomize", steps, cfg, sampler, scheduler, denoise]``; a COMBO with the option is
  followed by that control and a filter-list value;
- an image/video upload input adds its upload button after the required inputs.

Links become ``[source id, output slot]``; a widget fed by a link takes the link. What only the editor
knows is resolved the way the frontend's "Export (API)" does: Reroutes are followed, a PrimitiveNode's
value is written into the inputs it feeds, muted nodes are dropped (with the links they fed), a bypassed
node is dropped and each consumer wired to the bypassed node's input of the same type, notes are dropped.
Group nodes and subgraphs are refused: their inner graph lives elsewhere in the file, in a shape the
frontend owns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyjobs.errors import WorkflowImportError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Widgets drawn by frontend extensions whose stored value is not the value the API export sends.
UNSUPPORTED_WIDGET_TYPES = frozenset({"WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION"})
SEED_INPUTS = ("seed", "noise_seed")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
MODE_MUTED = 2  # LiteGraph "never"
MODE_BYPASSED = 4
_MAX_HOPS = 1000  # longer source chains than this are a cycle


@dataclass(frozen=True)
class WidgetSlot:
    """One position in ``widgets_values``: an input, or (name None) a value only the frontend uses."""

    name: str | None
    default: Any = None
    has_default: bool = False
    force_input: bool = False  # frontends before 1.16 stored a value for forceInput inputs too
    control: bool = False  # the "control after generate" of the widget before it


@dataclass(frozen=True)
class _Value:
    """A source that is a plain value (a PrimitiveNode's), not another node's output."""

    value: Any


_Source = tuple[str, int] | _Value | None


def is_ui_format(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


def _spec(entry: Any) -> tuple[Any, Mapping[str, Any]]:
    if not isinstance(entry, list | tuple) or not entry:
        return None, {}
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
    return entry[0], opts


def widget_layout(class_type: str, class_info: Mapping[str, Any]) -> list[WidgetSlot]:
    """The positions of ``widgets_values`` for one node class, from its /object_info entry."""
    inputs = class_info.get("input") or {}
    order = class_info.get("input_order") or {}
    slots: list[WidgetSlot] = []
    uploads: list[WidgetSlot] = []
    for section in ("required", "optional"):
        defs = inputs.get(section) or {}
        for name in order.get(section) or list(defs):
            type_, opts = _spec(defs.get(name))
            if isinstance(type_, str) and type_ in UNSUPPORTED_WIDGET_TYPES:
                raise WorkflowImportError(
                    f"{class_type}: input {name!r} is a {type_} widget, which only the ComfyUI editor can "
                    "turn into an API value; export this workflow with 'Export (API)' instead"
                )
            if opts.get("forceInput"):
                slots.append(WidgetSlot(name, force_input=True))
                continue
            is_combo = isinstance(type_, list) or type_ == "COMBO"
            if not (is_combo or type_ in WIDGET_TYPES):
                continue
            default = opts.get("default")
            if default is None and is_combo:
                choices = type_ if isinstance(type_, list) else opts.get("options") or []
                default = choices[0] if choices else None
            slots.append(WidgetSlot(name, default=default, has_default=default is not None))
            control = opts.get("control_after_generate")
            if type_ == "INT" and control is None:
                control = name in SEED_INPUTS
            if control and (type_ == "INT" or is_combo):  # the frontend adds no control to other widgets
                slots.append(WidgetSlot(None, control=True))  # "fixed", "randomize", ...
                if is_combo:
                    slots.append(WidgetSlot(None))  # the combo's control filter list
            if section == "required" and any(opts.get(o) for o in UPLOAD_OPTIONS):
                uploads.append(WidgetSlot(None))
        if section == "required":
            slots += uploads
    return slots


def _widget_values(
    node_id: str, class_type: str, node: Mapping[str, Any], layout: list[WidgetSlot]
) -> dict[str, Any]:
    raw = node.get("widgets_values")
    if isinstance(raw, Mapping):  # some custom nodes store their values by name
        by_name: dict[str, Any] = {}
        for slot in layout:
            if slot.name is not None and not slot.force_input and (slot.name in raw or slot.has_default):
                by_name[slot.name] = raw.get(slot.name, slot.default)
        return by_name
    values = list(raw) if isinstance(raw, list) else []
    slots = [s for s in layout if not s.force_input]
    if len(values) != len(slots) and len(values) == len(layout):
        slots = layout  # an old export that kept a value for each forceInput input
    # Values are matched by position, as the frontend matches them; a widget the export has no value for
    # (one added to the node since) gets its default. Two signs that the positions are off are refused
    # rather than turned into wrong inputs: a named widget left without any value, and a control slot
    # that does not hold a control word.
    missing = [s.name for s in slots[len(values) :] if s.name is not None and not s.has_default]
    misplaced = [
        i for i, s in enumerate(slots[: len(values)]) if s.control and values[i] not in CONTROL_VALUES
    ]
    if missing or misplaced:
        expected = ", ".join(s.name or ("(control)" if s.control else "(frontend-only)") for s in slots)
        why = (
            f"no value for {', '.join(str(m) for m in missing)}"
            if missing
            else f"{values[misplaced[0]]!r} where a control_after_generate value belongs"
        )
        raise WorkflowImportError(
            f"node {node_id} ({class_type}): widgets_values has {len(values)} values ({why}); its widgets "
            f"are {expected}: the export does not match this ComfyUI's node definitions"
        )
    out: dict[str, Any] = {}
    for i, slot in enumerate(slots):
        if slot.name is not None and not slot.force_input:
            out[slot.name] = values[i] if i < len(values) else slot.default
    return out


def _link_table(links: Any) -> dict[int, tuple[str, int]]:
    """link id -> (origin node id, origin slot). Links are arrays in version 0.4 exports and objects in
    the newer schema."""
    table: dict[int, tuple[str, int]] = {}
    for link in links or []:
        if isinstance(link, list) and len(link) >= 3:
            table[int(link[0])] = (str(link[1]), int(link[2]))
        elif isinstance(link, Mapping) and "id" in link:
            table[int(link["id"])] = (str(link["origin_id"]), int(link["origin_slot"]))
    return table


class _Converter:
    def __init__(self, workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        self.object_info = object_info
        self.nodes: dict[str, Mapping[str, Any]] = {}
        for node in workflow["nodes"]:
            if not isinstance(node, Mapping) or "id" not in node or not isinstance(node.get("type"), str):
                raise WorkflowImportError(f"not a UI-format node (needs an id and a type): {node!r:.120}")
            self.nodes[str(node["id"])] = node
        self.links = _link_table(workflow.get("links"))
        self._refuse_groups(workflow)

    def _refuse_groups(self, workflow: Mapping[str, Any]) -> None:
        definitions = workflow.get("definitions") or {}
        subgraphs = {
            str(sg.get("id")) for sg in definitions.get("subgraphs") or [] if isinstance(sg, Mapping)
        }
        group_nodes = set((workflow.get("extra") or {}).get("groupNodes") or {})
        found = []
        for node_id, node in self.nodes.items():
            type_ = node["type"]
            if type_ in subgraphs:
                found.append(f"node {node_id} (subgraph {node.get('title') or type_})")
            elif type_.startswith(("workflow>", "workflow/")) or type_ in group_nodes:
                found.append(f"node {node_id} (group node {type_})")
        if found:
            raise WorkflowImportError(
                "group nodes and subgraphs cannot be converted: "
                + ", ".join(found)
                + "; ungroup them (or unpack the subgraph) in ComfyUI and export again"
            )

    def _active(self, node: Mapping[str, Any]) -> bool:
        return node.get("mode") not in (MODE_MUTED, MODE_BYPASSED) and node["type"] not in (
            NOTE_TYPES | {REROUTE, PRIMITIVE}
        )

    def resolve(self, link_id: Any, consumer_type: Any) -> _Source:
        """Where a link really comes from once reroutes, primitives and bypassed nodes are looked through."""
        for _ in range(_MAX_HOPS):
            if link_id is None or int(link_id) not in self.links:
                return None
            origin_id, origin_slot = self.links[int(link_id)]
            origin = self.nodes.get(origin_id)
            if origin is None:
                return None
            if origin["type"] == REROUTE:
                link_id = ((origin.get("inputs") or [{}])[0] or {}).get("link")
            elif origin["type"] == PRIMITIVE:
                values = origin.get("widgets_values")
                return _Value(values[0]) if isinstance(values, list) and values else None
            elif origin.get("mode") == MODE_MUTED:
                return None
            elif origin.get("mode") == MODE_BYPASSED:
                # As the frontend does: the input at the same index as the output if its type matches,
                # else the first input of the consumer's type.
                inputs = list(origin.get("inputs") or [])
                for index in [origin_slot, *range(len(inputs))]:
                    if 0 <= index < len(inputs) and inputs[index].get("type") == consumer_type:
                        link_id = inputs[index].get("link")
                        break
                else:
                    return None
            else:
                return origin_id, origin_slot
        raise WorkflowImportError(f"link {link_id} goes round in a cycle of reroutes or bypassed nodes")

    def convert(self) -> dict[str, Any]:
        active = {nid: n for nid, n in self.nodes.items() if self._active(n)}
        unknown = [
            f"node {nid} ({n['type']})" for nid, n in active.items() if n["type"] not in self.object_info
        ]
        if unknown:
            raise WorkflowImportError(
                "node classes unknown to this ComfyUI (a custom node that is not installed?): "
                + ", ".join(unknown)
            )
        graph: dict[str, Any] = {}
        for node_id, node in sorted(active.items(), key=lambda item: _order_key(item[0], item[1])):
            class_type = node["type"]
            info = self.object_info[class_type]
            inputs = _widget_values(node_id, class_type, node, widget_layout(class_type, info))
            for entry in node.get("inputs") or []:
                if not isinstance(entry, Mapping) or entry.get("link") is None:
                    continue
                widget = entry.get("widget")
                name = widget.get("name") if isinstance(widget, Mapping) else None
                name = str(name or entry.get("name"))
                source = self.resolve(entry["link"], entry.get("type"))
                if isinstance(source, _Value):
                    inputs[name] = source.value
                elif source is not None:
                    inputs[name] = [source[0], source[1]]
                # A source that resolves to nothing (a muted node): a socket input is left out, as in the
                # frontend's export; a widget keeps its own value.
            title = node.get("title") or info.get("display_name") or class_type
            graph[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}
        # A link whose source did not make it into the graph (a node of a kind that has no API form) is
        # removed, as the frontend's export removes links to nodes it left out.
        for api_node in graph.values():
            for name, value in list(api_node["inputs"].items()):
                if (
                    isinstance(value, list)
                    and len(value) == 2
                    and isinstance(value[0], str)
                    and value[0] not in graph
                ):
                    del api_node["inputs"][name]
        if not graph:
            raise WorkflowImportError("the workflow has no node left to run once muted and bypassed nodes go")
        return graph


def _order_key(node_id: str, node: Mapping[str, Any]) -> tuple[int, int, int | str]:
    # The frontend's execution order when it saved one, then numeric id.
    order = node.get("order")
    rank = order if isinstance(order, int) else 1 << 30
    return (rank, 0, int(node_id)) if node_id.isdigit() else (rank, 1, node_id)


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    """The API-format graph of a UI-format export, with each node's title in ``_meta.title``.

    ``object_info`` is a ComfyUI's ``/object_info``; it must know every node class that runs. Raises
    WorkflowImportError naming the nodes at fault (unknown classes, group nodes, misaligned widgets).
    """
    if not is_ui_format(workflow):
        raise WorkflowImportError("not a UI-format export: expected an object with 'nodes' and 'links'")
    return _Converter(workflow, object_info).convert()
