"""The shape of the three manifest files, as pydantic models. Unknown keys are rejected everywhere.

These models check each file on its own; cross-file checks (a workflow's parameter exists in base.yaml, a
target's node and input exist in the template) live in ``loader``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from comfyjobs.manifests.model_values import SHA256

ParamType = Literal[
    "string", "integer", "number", "boolean", "choice", "image", "mask", "video", "audio", "file", "model"
]
# A `model` parameter's value is a file name in its `folder`, or a URL ({url, sha256}) the worker downloads
# into its host's model cache and links into that folder (models on demand).
# Media parameters: the value is an asset id, an http(s) URL or a data: URL; the worker hands the file to
# its ComfyUI (POST /upload/image) and writes the uploaded name into the target (LoadImage.image, ...).
MediaType = Literal["image", "mask", "video", "audio", "file"]
MEDIA_TYPES: tuple[str, ...] = get_args(MediaType)
Scalar = str | int | float | bool

# ComfyUI model folders a `choices_from` may name (folder_paths' names in 0.3.75).
ModelFolder = Literal[
    "checkpoints",
    "loras",
    "vae",
    "text_encoders",
    "clip",
    "diffusion_models",
    "unet",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "t2i_adapter",
    "gligen",
    "upscale_models",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
]
MODEL_FOLDERS: tuple[str, ...] = get_args(ModelFolder)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Strict):
    """One place a parameter writes to: a node (by id or by its title) and one of its inputs."""

    node: str | None = Field(default=None, description="Node id in the template.")
    title: str | None = Field(default=None, description="Node title (`_meta.title`), if unique.")
    input: str = Field(min_length=1)
    bypass_when_null: list[str] | None = Field(
        default=None,
        description=(
            "When the parameter is null, remove this node and reconnect its consumers: output i of the node "
            "is replaced by whatever feeds the input named at position i (e.g. LoraLoader: [model, clip])."
        ),
    )

    @model_validator(mode="after")
    def _one_locator(self) -> TargetSpec:
        if (self.node is None) == (self.title is None):
            raise ValueError("give exactly one of `node` (node id) or `title` (node title)")
        return self


class ParameterSpec(_Strict):
    """A public parameter in base.yaml."""

    type: ParamType
    description: str = ""
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    max_length: int | None = Field(default=None, ge=1)
    choices: list[Scalar] | None = None
    choices_from: ModelFolder | None = None
    folder: ModelFolder | None = Field(default=None, description="A model parameter's model folder.")
    nullable: bool = False
    example: Any = None
    targets: list[TargetSpec] = Field(default_factory=list)


class ParameterOverride(_Strict):
    """Per-workflow changes to a base parameter; `value` fixes it and hides it from the API."""

    required: bool | None = None
    description: str | None = None
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    max_length: int | None = Field(default=None, ge=1)
    choices: list[Scalar] | None = None
    choices_from: ModelFolder | None = None
    nullable: bool | None = None
    example: Any = None
    value: Any = None
    targets: list[TargetSpec] | None = None


class Requirements(_Strict):
    labels: list[str] = Field(
        default_factory=list, description="Only workers with all of these WORKER_LABELS take its jobs."
    )


class ModelSpec(_Strict):
    """A model file a workflow's template loads, and where a worker without it downloads it from."""

    folder: ModelFolder
    name: str = Field(min_length=1, description="Its name in the folder, as the template names it.")
    url: str = Field(min_length=1, description="http(s) URL of the file (MODEL_URL_ALLOWLIST applies).")
    sha256: str | None = Field(default=None, pattern=SHA256.pattern)


class WorkflowSpec(_Strict):
    template: str = Field(min_length=1, description="File name under the workflows folder (API format).")
    description: str = ""
    parameters: dict[str, ParameterOverride | None] = Field(default_factory=dict)
    prompt_parameter: str | None = Field(
        default=None, description="Parameter that LoRA prompt prefixes/suffixes apply to (default: prompt)."
    )
    time_limit_s: float | None = Field(default=None, gt=0)
    requires: Requirements = Field(default_factory=Requirements)
    models: list[ModelSpec] = Field(
        default_factory=list, description="Model files a worker downloads (once per host) if it lacks them."
    )


class LoraSpec(_Strict):
    description: str = ""
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    examples: list[str] = Field(default_factory=list)


class BaseFile(_Strict):
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)


class WorkflowsFile(_Strict):
    workflows: dict[str, WorkflowSpec] = Field(default_factory=dict)


class LorasFile(_Strict):
    loras: dict[str, LoraSpec] = Field(default_factory=dict)
