"""The validated, cross-checked view of the manifests that the API and the workers use.

Built by ``loader.load_registry``; immutable afterwards. Templates are kept parsed and never handed out
directly: ``patching.build_graph`` deep-copies before writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from comfyjobs.errors import WorkflowNotFoundError
from comfyjobs.manifests.schema import MEDIA_TYPES, LoraSpec, ModelSpec, ParamType

RANDOM = "random"


@dataclass(frozen=True)
class Target:
    node_id: str
    input: str
    bypass_when_null: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Parameter:
    """A parameter as one workflow exposes it: base.yaml merged with the workflow's override."""

    name: str
    type: ParamType
    description: str
    required: bool
    default: Any
    minimum: int | float | None
    maximum: int | float | None
    max_length: int | None
    choices: tuple[Any, ...] | None
    choices_from: str | None
    nullable: bool
    example: Any
    targets: tuple[Target, ...]
    fixed: bool = False
    value: Any = None
    folder: str | None = None  # a model parameter's model folder

    @property
    def model_folder(self) -> str | None:
        """The model folder its values are files of: `choices_from`, or a model parameter's `folder`."""
        return self.choices_from or self.folder

    @property
    def is_model(self) -> bool:
        """A model file: a name in ``folder``, or a URL the worker downloads (models on demand)."""
        return self.type == "model"

    @property
    def is_media(self) -> bool:
        """An input file (image, mask, video, audio, file), handed to ComfyUI by the worker."""
        return self.type in MEDIA_TYPES

    @property
    def random_default(self) -> bool:
        return self.default == RANDOM and self.type == "integer"

    def public_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "required": self.required,
        }
        if not self.required:
            out["default"] = self.default
        for key, val in (
            ("min", self.minimum),
            ("max", self.maximum),
            ("max_length", self.max_length),
            ("choices", list(self.choices) if self.choices is not None else None),
            ("choices_from", self.choices_from),
            ("folder", self.folder),
            ("example", self.example),
        ):
            if val is not None:
                out[key] = val
        if self.nullable:
            out["nullable"] = True
        return out


@dataclass(frozen=True)
class Workflow:
    id: str
    description: str
    template_file: str
    template: Mapping[str, Any]
    parameters: Mapping[str, Parameter]
    prompt_parameter: str | None
    time_limit_s: float | None
    request_model: type[BaseModel] = field(compare=False, repr=False)
    labels: frozenset[str] = frozenset()  # WORKER_LABELS a worker needs to take its jobs (`requires`)
    models: tuple[ModelSpec, ...] = ()  # files a worker lacking them downloads (manifest `models`)

    @property
    def public_parameters(self) -> list[Parameter]:
        return [p for p in self.parameters.values() if not p.fixed]

    @property
    def model_folders(self) -> set[str]:
        """The model folders its parameters choose from (`choices_from`, a model parameter's `folder`)."""
        return {p.model_folder for p in self.public_parameters if p.model_folder is not None}

    @property
    def model_parameters(self) -> list[Parameter]:
        return [p for p in self.parameters.values() if p.is_model]

    @property
    def media_parameters(self) -> list[Parameter]:
        return [p for p in self.parameters.values() if p.is_media and not p.fixed]


@dataclass(frozen=True)
class Registry:
    workflows: Mapping[str, Workflow]
    loras: Mapping[str, LoraSpec]

    @property
    def model_folders(self) -> set[str]:
        return {folder for w in self.workflows.values() for folder in w.model_folders}

    def workflow(self, workflow_id: str) -> Workflow:
        try:
            return self.workflows[workflow_id]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise WorkflowNotFoundError(f"unknown workflow {workflow_id!r} (known: {known})") from None
