"""A first guess at the public parameters of an API-format workflow, for the operator to edit.

Only the inputs nearly every deployment exposes are picked, and only where they hold a literal value (an
input fed by a link is not a parameter): the file of each input loader (LoadImage, LoadImageMask,
LoadVideo, LoadAudio: a required media parameter the caller uploads to), prompt texts, sampler settings
(seed, steps, cfg, sampler, scheduler, denoise), the size and batch of an ``Empty…`` latent or image, the
checkpoint, and each LoRA with its strength. A prompt is positive or negative by the sampler input it ends
up in, traced upstream from every ``positive``/``negative`` input (and a guider's ``conditioning``); a
text that reaches both (FLUX zeroes the positive for its negative) counts as positive.

The second and later instances of a role (a second sampler, a second LoRA, a second input image) get
numbered names (``steps_2``, ``lora_2``, ``lora_2_strength``, ``image_2``). Nothing here reads the
manifests; ``importer`` decides which names already exist in base.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyjobs.manifests.schema import MEDIA_TYPES, ParamType

_TEMPLATE_VALUE = object()  # a role's default: the template's current value


@dataclass(frozen=True)
class Role:
    """What a parameter of this kind looks like when base.yaml has none yet."""

    type: ParamType
    description: str
    min: int | float | None = None
    max: int | float | None = None
    max_length: int | None = None
    choices_from: str | None = None
    nullable: bool = False
    default: Any = _TEMPLATE_VALUE

    @property
    def default_from_template(self) -> bool:
        return self.default is _TEMPLATE_VALUE

    @property
    def is_media(self) -> bool:
        """An input file: required, never a default (the template's file name is the author's own)."""
        return self.type in MEDIA_TYPES


_MEDIA_VALUE = "an asset id, an http(s) URL or a data: URL"

# In the order parameters are listed in workflows.yaml.
ROLES: dict[str, Role] = {
    "image": Role("image", f"Input picture: {_MEDIA_VALUE}.", default=None),
    "mask": Role("mask", f"Mask (white = the area to change): {_MEDIA_VALUE}.", default=None),
    "video": Role("video", f"Input video: {_MEDIA_VALUE}.", default=None),
    "audio": Role("audio", f"Input audio: {_MEDIA_VALUE}.", default=None),
    "prompt": Role("string", "What to generate.", max_length=4000),
    "negative_prompt": Role("string", "What to avoid.", max_length=4000),
    "seed": Role(
        "integer",
        "Noise seed. `random` (the default) draws one; the task records the seed used.",
        min=0,
        max=2**64 - 1,
        default="random",
    ),
    "steps": Role("integer", "Sampling steps.", min=1, max=150),
    "cfg": Role("number", "Classifier-free guidance scale.", min=0.0, max=30.0),
    "sampler": Role("choice", "Sampler algorithm."),
    "scheduler": Role("choice", "Noise schedule."),
    "denoise": Role("number", "Share of the latent the sampler replaces (1.0: all of it).", min=0.0, max=1.0),
    "width": Role("integer", "Image width in pixels.", min=64, max=2048),
    "height": Role("integer", "Image height in pixels.", min=64, max=2048),
    "batch_size": Role("integer", "Images per job.", min=1, max=8),
    "checkpoint": Role(
        "choice", "Checkpoint file in the models folder's checkpoints/.", choices_from="checkpoints"
    ),
    "lora": Role(
        "choice",
        "LoRA file in the models folder's loras/; null (the default) for none.",
        choices_from="loras",
        nullable=True,
        default=None,
    ),
    "lora_strength": Role("number", "Strength of the LoRA on the model and on the text encoder.", -4.0, 4.0),
}

_SAMPLER_INPUTS = {
    "seed": "seed",
    "noise_seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "sampler_name": "sampler",
    "scheduler": "scheduler",
    "denoise": "denoise",
}
# Loader class -> (role, the input naming its file in ComfyUI's input folder).
_MEDIA_LOADERS = {
    "LoadImage": ("image", "image"),
    "LoadImageMask": ("mask", "image"),
    "LoadVideo": ("video", "file"),
    "LoadAudio": ("audio", "audio"),
}
_TEXT_INPUTS = ("text", "prompt", "text_g", "text_l", "clip_l", "t5xxl")
_LORA_PASSTHROUGH = ("model", "clip")  # LoraLoader's outputs, in order; LoraLoaderModelOnly has the first
_LORA_STRENGTHS = ("strength_model", "strength_clip")


@dataclass(frozen=True)
class Guess:
    name: str  # the name it would have in base.yaml: the role's, numbered from the second instance on
    role: str
    targets: tuple[tuple[str, str], ...]  # (node id, input)
    value: Any  # the template's current value (of the first target)
    bypass_when_null: tuple[str, ...] | None = None
    choices: tuple[Any, ...] | None = None  # a sampler's/scheduler's choices, where /object_info says


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def fits_type(param_type: str, value: Any) -> bool:
    if param_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if param_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if param_type == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str)


def _literal(node: Mapping[str, Any], name: str, param_type: str) -> bool:
    inputs = node.get("inputs") or {}
    return name in inputs and fits_type(param_type, inputs[name])


def _instance_name(role: str, index: int) -> str:
    return role if index == 0 else f"{role}_{index + 1}"


def _choices(object_info: Mapping[str, Any] | None, class_type: str, name: str) -> tuple[Any, ...] | None:
    inputs = ((object_info or {}).get(class_type) or {}).get("input") or {}
    for section in ("required", "optional"):
        spec = (inputs.get(section) or {}).get(name)
        if isinstance(spec, list) and spec:
            if isinstance(spec[0], list) and spec[0]:
                return tuple(spec[0])
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            if spec[0] == "COMBO" and opts.get("options"):
                return tuple(opts["options"])
    return None


def _prompt_polarity(graph: Mapping[str, Any]) -> dict[str, str]:
    """Text node id -> "positive" or "negative", by the sampler inputs its conditioning reaches."""
    found: dict[str, str] = {}
    for polarity in ("negative", "positive"):  # positive last: it wins when a text reaches both
        stack: list[str] = []
        for node in graph.values():
            inputs = node.get("inputs") or {}
            starts = [polarity]
            if polarity == "positive" and "Guider" in str(node.get("class_type")):
                starts.append("conditioning")  # BasicGuider's single conditioning is the positive one
            stack += [inputs[s][0] for s in starts if _is_link(inputs.get(s))]
        seen: set[str] = set()
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in graph:
                continue
            seen.add(node_id)
            inputs = graph[node_id].get("inputs") or {}
            if any(fits_type("string", inputs.get(t)) for t in _TEXT_INPUTS):
                found[node_id] = polarity
            # Through a node that carries both (a ControlNet apply), follow only this side.
            names = [polarity] if "positive" in inputs and "negative" in inputs else list(inputs)
            stack += [inputs[n][0] for n in names if _is_link(inputs.get(n))]
    return found


def guess_parameters(graph: Mapping[str, Any], object_info: Mapping[str, Any] | None = None) -> list[Guess]:
    """The likely public parameters of an API-format graph, in workflows.yaml order."""
    by_role: dict[str, list[Guess]] = {role: [] for role in ROLES}

    def add(role: str, targets: list[tuple[str, str]], value: Any, **extra: Any) -> None:
        name = _instance_name(role, len(by_role[role]))
        by_role[role].append(Guess(name=name, role=role, targets=tuple(targets), value=value, **extra))

    polarity = _prompt_polarity(graph)
    for node_id, node in graph.items():
        inputs = node.get("inputs") or {}
        media = _MEDIA_LOADERS.get(str(node.get("class_type")))
        if media is not None and _literal(node, media[1], "string"):
            add(media[0], [(node_id, media[1])], inputs[media[1]])
        if node_id in polarity:
            texts = [t for t in _TEXT_INPUTS if _literal(node, t, "string")]
            role = "prompt" if polarity[node_id] == "positive" else "negative_prompt"
            add(role, [(node_id, t) for t in texts], inputs[texts[0]])
        for name, role in _SAMPLER_INPUTS.items():
            if _literal(node, name, ROLES[role].type):
                choices = (
                    _choices(object_info, node["class_type"], name)
                    if role in ("sampler", "scheduler")
                    else None
                )
                add(role, [(node_id, name)], inputs[name], choices=choices)
        if str(node.get("class_type")).startswith("Empty") and all(
            _literal(node, n, "integer") for n in ("width", "height")
        ):
            for name in ("width", "height", "batch_size"):
                if _literal(node, name, "integer"):
                    add(name, [(node_id, name)], inputs[name])
        if _literal(node, "ckpt_name", "string"):
            add("checkpoint", [(node_id, "ckpt_name")], inputs["ckpt_name"])
        if _literal(node, "lora_name", "string"):
            passthrough = tuple(n for n in _LORA_PASSTHROUGH if _is_link(inputs.get(n)))
            add("lora", [(node_id, "lora_name")], inputs["lora_name"], bypass_when_null=passthrough or None)
            strengths = [s for s in _LORA_STRENGTHS if _literal(node, s, "number")]
            if strengths:
                lora_name = by_role["lora"][-1].name
                by_role["lora_strength"].append(
                    Guess(
                        name=f"{lora_name}_strength",
                        role="lora_strength",
                        targets=tuple((node_id, s) for s in strengths),
                        value=inputs[strengths[0]],
                    )
                )
    ordered: list[Guess] = []
    for role, guesses in by_role.items():
        if role == "lora_strength":
            continue
        for guess in guesses:
            ordered.append(guess)
            if role == "lora":  # each LoRA next to its strength
                ordered += [s for s in by_role["lora_strength"] if s.targets[0][0] == guess.targets[0][0]]
    return ordered
