"""Imports a ComfyUI workflow as a comfyjobs workflow: the template, a workflows.yaml entry, and base.yaml
parameters for its obvious inputs, all as a first draft for the operator to edit.

A parameter base.yaml already has is reused when it means the same (same type, same kind of choices);
its targets in base.yaml were written for another template, so the import always writes this template's
targets, by node id, as a per-workflow override. A parameter base.yaml lacks is added there with
neutral settings (bounds of its kind, widened to the template's value; the template's value as default)
and no targets of its own. An input file (image, mask, video, audio) is a required parameter with no
default: the file the export names is only on its author's machine. The manifests are edited as text
(comments and layout stay as they are), and the result is loaded with ``load_registry``: if the import
added a problem, every file is put back as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from comfyjobs.authoring.guess import ROLES, Guess, Role, fits_type, guess_parameters
from comfyjobs.authoring.ui_format import is_ui_format, ui_to_api
from comfyjobs.authoring.yaml_text import append_entries, remove_entry
from comfyjobs.errors import ManifestError, WorkflowImportError
from comfyjobs.manifests.loader import load_registry, load_template
from comfyjobs.manifests.registry import RANDOM
from comfyjobs.manifests.sources import BASE_FILE, WORKFLOWS_FILE

# The loader's rules for workflow ids and parameter names.
_WORKFLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9_]+")
# Fields of a base parameter that a same-named copy (`steps_2` from `steps`) inherits.
_JSON_WIDTH = 110
_COPIED_FIELDS = ("type", "description", "min", "max", "max_length", "choices", "choices_from", "nullable")


@dataclass(frozen=True)
class ImportedParameter:
    name: str
    role: str  # which kind of input it is: prompt, seed, steps, lora, ...
    created: bool  # added to base.yaml by this import (else an existing base parameter is reused)
    targets: tuple[tuple[str, str], ...]  # (node id, input) in the new template
    default: Any  # the workflow's default, as written (None for a required parameter)


@dataclass(frozen=True)
class ImportResult:
    workflow_id: str
    source_format: Literal["api", "ui"]
    template_path: Path
    parameters: tuple[ImportedParameter, ...]


def _read_source(source: Path) -> Any:
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowImportError(f"{source}: cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise WorkflowImportError(f"{source}: not valid JSON: {exc}") from None


def _api_graph(
    source: Path, object_info: Mapping[str, Any] | None
) -> tuple[dict[str, Any], Literal["api", "ui"]]:
    data = _read_source(source)
    if is_ui_format(data):
        if object_info is None:
            raise WorkflowImportError(
                f"{source} is a UI-format export; converting it needs the node definitions of a running "
                "ComfyUI (its /object_info). Start ComfyUI, or export the workflow with 'Export (API)'"
            )
        return ui_to_api(data, object_info), "ui"
    try:
        graph = load_template(source)  # the same checks a template gets at startup
    except ValueError as exc:
        raise WorkflowImportError(f"{source}: {exc}") from None
    if object_info is not None:
        unknown = [
            f"node {nid} ({n['class_type']})"
            for nid, n in graph.items()
            if n["class_type"] not in object_info
        ]
        if unknown:
            raise WorkflowImportError(
                "node classes unknown to this ComfyUI (a custom node that is not installed?): "
                + ", ".join(unknown)
            )
    for node in graph.values():
        meta = node.setdefault("_meta", {})
        if not meta.get("title"):
            info = (object_info or {}).get(node["class_type"]) or {}
            meta["title"] = info.get("display_name") or node["class_type"]
    return graph, "api"


def template_json(graph: Mapping[str, Any]) -> str:
    """The template as the shipped ones are written: a node per block, its inputs on one line when they
    fit and one input a line when not, links as `["4", 0]`."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    nodes = []
    for node_id, node in graph.items():
        fields = []
        for key, value in node.items():
            one_line = f"    {dump(key)}: {dump(value)}"
            if key == "inputs" and value and len(one_line) > _JSON_WIDTH:
                inputs = ",\n".join(f"      {dump(k)}: {dump(v)}" for k, v in value.items())
                one_line = f"    {dump(key)}: {{\n{inputs}\n    }}"
            fields.append(one_line)
        nodes.append(f"  {dump(node_id)}: {{\n" + ",\n".join(fields) + "\n  }")
    return "{\n" + ",\n".join(nodes) + "\n}\n"


def _valid_value(spec: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` passes the parameter's own checks, so the loader accepts it as a default."""
    kind = spec.get("type")
    if kind == "choice":
        return (
            value in spec["choices"]
            if spec.get("choices") is not None
            else isinstance(value, str) and bool(value)
        )
    if not fits_type(str(kind), value):
        return False
    if kind in ("integer", "number"):
        return (spec.get("min") is None or value >= spec["min"]) and (
            spec.get("max") is None or value <= spec["max"]
        )
    return not (kind == "string" and spec.get("max_length") is not None and len(value) > spec["max_length"])


def _compatible(spec: Mapping[str, Any], role: Role) -> bool:
    """An existing base parameter means what the role means: same type, same kind of choices, and (for a
    LoRA) null for none."""
    if spec.get("type") != role.type or spec.get("choices_from") != role.choices_from:
        return False
    return not role.nullable or bool(spec.get("nullable"))


def _new_spec(guess: Guess, role: Role, template_spec: Mapping[str, Any] | None, note: str) -> dict[str, Any]:
    """A base.yaml entry for a parameter base.yaml lacks: modelled on ``template_spec`` (the unnumbered
    parameter, for `steps_2`) or on the role, defaulting to the template's value and admitting it."""
    spec: dict[str, Any] = {}
    if template_spec is not None and _compatible(template_spec, role):
        spec = {k: template_spec[k] for k in _COPIED_FIELDS if template_spec.get(k) is not None}
    else:
        spec = {"type": role.type, "description": role.description}
        for key in ("min", "max", "max_length", "choices_from"):
            if getattr(role, key) is not None:
                spec[key] = getattr(role, key)
        if role.nullable:
            spec["nullable"] = True
    if note:
        spec["description"] = f"{spec.get('description', '')} ({note})".strip()
    if role.is_media:  # required: the loader refuses a default on a media parameter
        return spec
    default = guess.value if role.default_from_template else role.default
    if role.type == "choice" and role.choices_from is None:
        choices = list(spec.get("choices") or guess.choices or [])
        spec["choices"] = choices if guess.value in choices else [*choices, guess.value]
    if role.type in ("integer", "number") and default != RANDOM:
        if spec.get("min") is not None and default < spec["min"]:
            spec["min"] = default
        if spec.get("max") is not None and default > spec["max"]:
            spec["max"] = default
    if role.type == "string" and spec.get("max_length") is not None:
        spec["max_length"] = max(spec["max_length"], len(default))
    # Keys in the order base.yaml lists them.
    order = (
        "type",
        "description",
        "default",
        "min",
        "max",
        "max_length",
        "choices",
        "choices_from",
        "nullable",
    )
    spec["default"] = default
    return {k: spec[k] for k in order if k in spec}


def _targets(guess: Guess) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for node_id, name in guess.targets:
        target: dict[str, Any] = {"node": node_id, "input": name}
        if guess.role == "lora" and guess.bypass_when_null:
            target["bypass_when_null"] = list(guess.bypass_when_null)
        out.append(target)
    return out


def _plan(
    guesses: list[Guess], base: Mapping[str, Any], workflow_id: str, graph: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[ImportedParameter]]:
    """(new base.yaml entries, the workflow's parameter overrides, what was imported)."""
    created: dict[str, dict[str, Any]] = {}
    overrides: dict[str, dict[str, Any]] = {}
    imported: list[ImportedParameter] = []
    slug = _NOT_NAME_CHARS.sub("_", workflow_id.lower()).strip("_") or "workflow"
    for guess in guesses:
        role = ROLES[guess.role]
        candidates = [
            guess.name,
            f"{guess.name}_{slug}",
            *(f"{guess.name}_{slug}_{i}" for i in range(2, 100)),
        ]
        name = next(
            n
            for n in candidates
            if n not in overrides
            and (n not in base or (isinstance(base[n], Mapping) and _compatible(base[n], role)))
        )
        override: dict[str, Any] = {}
        if name in base:
            spec: Mapping[str, Any] = base[name]
            has_default = "default" in spec
            reuse_default = (
                role.is_media
                or guess.role in ("seed", "lora")
                or (guess.role == "prompt" and not has_default)
            )
            if not reuse_default and guess.value != spec.get("default") and _valid_value(spec, guess.value):
                override["default"] = guess.value
            default = override.get("default", spec.get("default"))
        else:
            first_node = guess.targets[0][0]
            title = ((graph[first_node].get("_meta") or {}).get("title")) or graph[first_node]["class_type"]
            note = f"{workflow_id}: node {first_node}, {title}" if name != guess.role else ""
            created[name] = _new_spec(guess, role, base.get(guess.role), note)
            default = created[name].get("default")
        if guess.role == "lora" and not guess.bypass_when_null:
            # Null could not take the loader out of this graph: the parameter picks a file, never none.
            override.update(nullable=False, default=guess.value)
            default = guess.value
        override["targets"] = _targets(guess)
        overrides[name] = override
        imported.append(ImportedParameter(name, guess.role, name in created, guess.targets, default))
    return created, overrides, imported


def _problems(manifest_dir: Path, workflow_dir: Path) -> set[tuple[str, str, str]]:
    try:
        load_registry(manifest_dir, workflow_dir)
    except ManifestError as exc:
        return {(p.file, p.key, p.reason) for p in exc.problems}
    return set()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WorkflowImportError(f"{path}: cannot be read: {exc}") from None


def _load_yaml(path: Path, text: str | None, key: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as exc:
        raise WorkflowImportError(f"{path}: not valid YAML: {exc}") from None
    inner = data.get(key) if isinstance(data, dict) else None
    return inner if isinstance(inner, dict) else {}


def import_workflow(
    source: Path,
    workflow_id: str,
    *,
    manifest_dir: Path,
    workflow_dir: Path,
    object_info: Mapping[str, Any] | None,
    overwrite: bool = False,
) -> ImportResult:
    """Imports ``source`` (API or UI format; UI needs ``object_info``, a running ComfyUI's /object_info) as
    workflow ``workflow_id``: writes ``workflow_dir/<id>.json`` and adds the workflow, and the base
    parameters it needs, to the manifests. Raises WorkflowImportError, with nothing changed, when the id is
    taken (unless ``overwrite``), the export cannot be converted, or the result would not load."""
    if not _WORKFLOW_ID.match(workflow_id):
        raise WorkflowImportError(f"workflow id {workflow_id!r}: use letters, digits, '-' and '_'")
    graph, source_format = _api_graph(source, object_info)

    base_path, workflows_path = manifest_dir / BASE_FILE, manifest_dir / WORKFLOWS_FILE
    template_path = workflow_dir / f"{workflow_id}.json"
    base_text, workflows_text = _read_text(base_path), _read_text(workflows_path)
    template_text = _read_text(template_path)
    base = _load_yaml(base_path, base_text, "parameters")
    workflows = _load_yaml(workflows_path, workflows_text, "workflows")
    if not overwrite:
        if workflow_id in workflows:
            raise WorkflowImportError(f"workflow {workflow_id!r} exists already in {workflows_path}")
        if template_text is not None:
            raise WorkflowImportError(f"{template_path} exists already; choose another workflow id")

    created, overrides, imported = _plan(guess_parameters(graph, object_info), base, workflow_id, graph)
    entry = {
        "template": template_path.name,
        "description": f"Imported from {source.name}.",
        "parameters": overrides,
    }
    try:
        new_base = base_text or ""
        if created:
            new_base = append_entries(
                new_base, "parameters", created, comment=f"Added by the import of workflow {workflow_id}."
            )
        new_workflows = remove_entry(workflows_text or "", "workflows", workflow_id)
        new_workflows = append_entries(
            new_workflows,
            "workflows",
            {workflow_id: entry},
            comment=f"Imported from {source.name}: targets are node ids of {template_path.name}; review it.",
        )
    except ValueError as exc:
        raise WorkflowImportError(f"cannot add the workflow to the manifests: {exc}") from None

    before = _problems(manifest_dir, workflow_dir)
    written = [(template_path, template_text), (base_path, base_text), (workflows_path, workflows_text)]
    try:
        workflow_dir.mkdir(parents=True, exist_ok=True)
        manifest_dir.mkdir(parents=True, exist_ok=True)
        template_path.write_text(template_json(graph), encoding="utf-8")
        base_path.write_text(new_base, encoding="utf-8")
        workflows_path.write_text(new_workflows, encoding="utf-8")
        added = sorted(_problems(manifest_dir, workflow_dir) - before)
    except OSError as exc:
        _restore(written)
        raise WorkflowImportError(f"cannot write the workflow: {exc}") from None
    if added:
        _restore(written)
        reasons = "\n".join(f"  - {file}: {key}: {reason}" for file, key, reason in added)
        raise WorkflowImportError(f"the imported workflow would not load; nothing was changed:\n{reasons}")
    return ImportResult(workflow_id, source_format, template_path, tuple(imported))


def _restore(files: list[tuple[Path, str | None]]) -> None:
    """Puts each file back as it was before the import (removing the ones it created)."""
    for path, text in files:
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text, encoding="utf-8")
