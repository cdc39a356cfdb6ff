"""A job's outputs: fetched from the worker's ComfyUI and put in the object store, one key per file
(``outputs/<task_id>/<name>``), each with its content type and kind. With the ``s3`` backend the worker
uploads them itself: the API never needs the worker's disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from comfyjobs.comfy.client import OutputFile
from comfyjobs.jobs.record import OutputKind, StoredOutput
from comfyjobs.storage.objects import ObjectStore, content_type_for, output_key, output_prefix

Downloader = Callable[[OutputFile, Path], None]


def output_kind(content_type: str, *, animated: bool) -> OutputKind:
    major = content_type.split("/", 1)[0]
    if major == "image":
        return "animated_image" if animated or content_type == "image/gif" else "image"
    if major in ("video", "audio", "text"):
        return major  # type: ignore[return-value]
    return "file"


def safe_name(name: str) -> str:
    """ComfyUI's file name, reduced to one plain path part the stores and URLs accept."""
    base = Path(name.replace("\\", "/")).name.lstrip(".") or "output"
    if len(base) > 200:
        suffix = Path(base).suffix[:20]
        base = base[: 200 - len(suffix)] + suffix
    return base


class OutputSaver:
    def __init__(self, store: ObjectStore, staging_dir: Path) -> None:
        self._store = store
        self._staging_dir = staging_dir

    def save_all(
        self, task_id: str, files: list[OutputFile], download: Downloader, *, retried: bool = False
    ) -> list[StoredOutput]:
        """Fetches every file and stores it. A retried job starts from an empty prefix (what an earlier
        attempt stored goes first); each object is written whole (a listed output is always complete).
        The prefix's deletion is the worker's to schedule, before (worker.runner)."""
        prefix = output_prefix(task_id)
        if retried:
            self._store.delete(prefix)
        self._staging_dir.mkdir(parents=True, exist_ok=True)  # (ComfyUI empties its temp folder at start)
        stored = []
        taken: set[str] = set()
        for index, item in enumerate(files):
            name = _unique(safe_name(item.filename), taken)
            local = self._staging_dir / f"{task_id}-{index}-{name}"  # a job runs on one thread at a time
            try:
                download(item, local)
                content_type = content_type_for(name)
                size = local.stat().st_size
                self._store.put_file(output_key(task_id, name), local, content_type)  # moved, not copied
            finally:
                local.unlink(missing_ok=True)
            stored.append(
                StoredOutput(
                    filename=name,
                    content_type=content_type,
                    node_id=item.node_id,
                    size_bytes=size,
                    kind=output_kind(content_type, animated=item.animated),
                )
            )
        return stored


def _unique(name: str, taken: set[str]) -> str:
    candidate, stem, suffix, n = name, Path(name).stem, Path(name).suffix, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    taken.add(candidate)
    return candidate
