"""What is installed in the shared models folder, as ComfyUI names it (paths relative to the folder)."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf", ".onnx"}
)


class ModelCatalog:
    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def list(self, folder: str) -> list[str]:
        """Model files under ``folder`` (e.g. "checkpoints"), sorted, with "/" between sub-folders.

        Reads the disk on every call, so a model dropped in is usable at once; call it off the event loop.
        """
        root = self.model_dir / folder
        names = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(root)
            for filename in filenames:
                if Path(filename).suffix.lower() in MODEL_EXTENSIONS and not filename.startswith("."):
                    names.append((rel / filename).as_posix())
        return sorted(names)
