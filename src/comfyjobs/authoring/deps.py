"""What an API-format workflow needs to run: its node classes and the model files its inputs name.

Offline and deterministic: nothing is looked up, so it answers the same on a laptop without ComfyUI as on a
worker. A model file is any string input whose extension ComfyUI loads weights from; its folder comes from
a table of the loaders that ship with ComfyUI 0.3.75 (plus two common GGUF loaders), and is None for any
other node, since only the node's own code knows where it looks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# folder_paths.supported_pt_extensions in 0.3.75 (minus .pkl, never a model someone ships on purpose), plus
# the single-file formats custom loaders use.
MODEL_EXTENSIONS: tuple[str, ...] = (
    ".safetensors",
    ".sft",
    ".ckpt",
    ".pt",
    ".pt2",
    ".pth",
    ".bin",
    ".gguf",
    ".onnx",
)

# (node class, input) -> ComfyUI model folder, as each loader calls folder_paths.get_filename_list.
LOADER_FOLDERS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLora", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CreateHookLora", "lora_name"): "loras",
    ("CreateHookLoraModelOnly", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name1"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name2"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name4"): "text_encoders",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("ModelPatchLoader", "name"): "model_patches",
    ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
    # ComfyUI-GGUF registers its files under models/unet and models/clip, which ComfyUI itself reads as
    # diffusion_models and text_encoders.
    ("UnetLoaderGGUF", "unet_name"): "diffusion_models",
    ("CLIPLoaderGGUF", "clip_name"): "text_encoders",
    ("DualCLIPLoaderGGUF", "clip_name1"): "text_encoders",
    ("DualCLIPLoaderGGUF", "clip_name2"): "text_encoders",
}


@dataclass(frozen=True)
class ModelRef:
    """One model file one node input names. ``folder`` is None when the node is not in the table."""

    file: str
    folder: str | None
    node_id: str
    class_type: str
    input: str


@dataclass(frozen=True)
class WorkflowDeps:
    node_classes: tuple[str, ...]  # sorted, unique; built-in or custom alike
    models: tuple[ModelRef, ...]  # sorted by folder (unknown last), file, node id, input

    @property
    def files(self) -> tuple[tuple[str | None, str], ...]:
        """The distinct (folder, file) pairs, in the order of ``models``."""
        return tuple(dict.fromkeys((m.folder, m.file) for m in self.models))


def looks_like_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS)


def _node_sort_key(node_id: str) -> tuple[int, int | str]:
    # Numeric ids in numeric order ("3" before "10"), any other id after them.
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def workflow_deps(graph: Mapping[str, Any]) -> WorkflowDeps:
    """The node classes and model files of an API-format graph. Nodes without a class_type are skipped."""
    classes: set[str] = set()
    models: list[ModelRef] = []
    for node_id, node in graph.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            continue
        class_type = node["class_type"]
        classes.add(class_type)
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping):
            continue
        for name, value in inputs.items():
            if looks_like_model_file(value):
                folder = LOADER_FOLDERS.get((class_type, name))
                models.append(ModelRef(value, folder, str(node_id), class_type, name))
    models.sort(key=lambda m: (m.folder is None, m.folder or "", m.file, _node_sort_key(m.node_id), m.input))
    return WorkflowDeps(node_classes=tuple(sorted(classes)), models=tuple(models))


def format_deps(deps: WorkflowDeps) -> str:
    """A plain-text report for the terminal: one class per line, then one model file per line with the
    folder it belongs in and the node input(s) that name it."""
    lines = [f"Node classes ({len(deps.node_classes)}):"]
    lines += [f"  {name}" for name in deps.node_classes]
    lines.append(f"Model files ({len(deps.files)}):")
    if not deps.files:
        lines.append("  (none)")
    for folder, file in deps.files:
        users = ", ".join(
            f"node {m.node_id} {m.class_type}.{m.input}"
            for m in deps.models
            if m.folder == folder and m.file == file
        )
        where = f"{folder}/{file}" if folder is not None else f"{file}  (folder unknown)"
        lines.append(f"  {where}  <- {users}")
    return "\n".join(lines)
