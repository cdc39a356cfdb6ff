"""The service's output folder: one sub-folder per task, files named as ComfyUI named them."""

from __future__ import annotations

import mimetypes
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from comfyjobs.comfy.client import OutputFile
from comfyjobs.errors import OutputNotFoundError
from comfyjobs.jobs.record import StoredOutput

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Downloader = Callable[[OutputFile, Path], None]


def content_type_for(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def task_dir(self, task_id: str) -> Path:
        if not _SAFE_ID.match(task_id):
            raise OutputNotFoundError(f"no outputs for task {task_id!r}")
        return self.root / task_id

    def save_all(self, task_id: str, files: list[OutputFile], download: Downloader) -> list[StoredOutput]:
        """Fetches every file into the task's folder. A retried job starts from an empty folder; each file
        is written under a temporary name and renamed, so a listed file is always complete."""
        folder = self.task_dir(task_id)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        stored = []
        taken: set[str] = set()
        for item in files:
            name = _unique(Path(item.filename).name, taken)
            partial = folder / f".{name}.part"
            download(item, partial)
            final = folder / name
            partial.rename(final)
            stored.append(
                StoredOutput(
                    filename=name,
                    content_type=content_type_for(name),
                    node_id=item.node_id,
                    size_bytes=final.stat().st_size,
                )
            )
        return stored

    def path(self, task_id: str, filename: str) -> Path:
        """The file to serve; refuses names that would leave the task's folder."""
        folder = self.task_dir(task_id)
        if Path(filename).name != filename or filename.startswith("."):
            raise OutputNotFoundError(f"no output {filename!r} for task {task_id}")
        path = folder / filename
        if not path.is_file():
            raise OutputNotFoundError(f"no output {filename!r} for task {task_id}")
        return path


def _unique(name: str, taken: set[str]) -> str:
    candidate, stem, suffix, n = name, Path(name).stem, Path(name).suffix, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    taken.add(candidate)
    return candidate
