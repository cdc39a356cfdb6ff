"""What is installed in the models folders, as ComfyUI names it (paths relative to the folder).

Read from the disk: by workers (reported in their heartbeats), and by the API when it shares the workers'
MODEL_DIR (the ``local`` backend; with ``s3`` it uses the workers' reports, see api.model_catalog).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf", ".onnx"}
)

ModelLists = dict[str, list[str]]


def list_model_folder(model_dir: Path, folder: str) -> list[str]:
    """Model files under ``folder`` (e.g. "checkpoints"), sorted, with "/" between sub-folders.
    Reads the disk on every call, so a model dropped in is usable at once; blocking."""
    root = model_dir / folder
    names = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for filename in filenames:
            if Path(filename).suffix.lower() in MODEL_EXTENSIONS and not filename.startswith("."):
                names.append((rel / filename).as_posix())
    return sorted(names)


def folders_stamp(*roots: Path | None) -> tuple[tuple[str, int], ...]:
    """The modification times of the model folders under ``roots`` and of their sub-folders: a file
    added to or removed from one (a download, a link, a copy) changes it. Reads directories, no file's
    metadata; blocking."""
    stamps: list[tuple[str, int]] = []

    def folders(path: str, depth: int) -> None:
        with contextlib.suppress(OSError), os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir():
                    stamps.append((entry.path, entry.stat().st_mtime_ns))
                    if depth > 1:
                        folders(entry.path, depth - 1)

    for root in roots:
        if root is not None:
            folders(str(root), 2)
    return tuple(sorted(stamps))


class DiskModels:
    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def list(self, folder: str) -> list[str]:
        return list_model_folder(self.model_dir, folder)

    async def lists(self, folders: Iterable[str]) -> ModelLists:
        wanted = sorted(set(folders))

        def read() -> ModelLists:
            return {folder: self.list(folder) for folder in wanted}

        return await run_in_threadpool(read) if wanted else {}
