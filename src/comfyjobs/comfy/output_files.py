"""ComfyUI's own copies of the outputs: deleted once their job is done with them and ComfyUI can no
longer hand them out again.

A job's outputs are copied out of its ComfyUI's output (or temp) folder into the object store. Left
there, they would fill the disk a second time, and slow ComfyUI down job after job: SaveImage picks its
next file number by listing the whole folder, in Python, on every save (O(files) per image).

They cannot all go at once: a prompt served from ComfyUI's cache reports the files the cached output
node saved earlier, under their old names. With ComfyUI's default (classic) cache only the latest prompt's
nodes stay cached, so the files of this worker's last KEEP_PROMPTS finished prompts are kept and older ones
deleted (a file a newer prompt reported again stays with it). Deleting only older files also keeps
SaveImage's numbering rising, so a new file never takes the name of one still reported. With a cache
that keeps older prompts' results (``--cache-lru``, ``--cache-ram`` in COMFYUI_EXTRA_ARGS) nothing is
deleted: ComfyUI's folders are emptied when it restarts, as always.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from comfyjobs.comfy.client import OutputFile

log = logging.getLogger(__name__)

KEEP_PROMPTS = 4  # > the prompts a worker has in flight (jobs.delivery.PIPELINE_DEPTH)
LASTING_CACHE_ARGS = ("--cache-lru", "--cache-ram")  # ComfyUI caches that outlive the next prompt


def keeps_older_results(comfyui_args: Sequence[str]) -> bool:
    """Whether ComfyUI, started with these arguments, may serve an older prompt's outputs from cache."""
    return any(arg.split("=", 1)[0] in LASTING_CACHE_ARGS for arg in comfyui_args)


def output_path(folders: dict[str, Path], output: OutputFile) -> Path | None:
    """Where ``output`` lies, given ComfyUI's folders by type ("output", "temp"); None for a text output,
    another type, or a name that would lead out of its folder."""
    base = folders.get(output.type)
    parts = PurePosixPath(output.subfolder.replace("\\", "/"), output.filename).parts
    if base is None or output.text is not None or not parts or any(p in ("..", "/") for p in parts):
        return None
    return base.joinpath(*parts)


class ComfyOutputFiles:
    """The files of one worker's ComfyUI's last KEEP_PROMPTS finished prompts; ``done`` deletes older
    ones. A restarted ComfyUI starts with empty folders and numbers its files from 1 again: what was kept
    of the one before is forgotten then, and files of a prompt it ran are left alone (gone with it).
    Thread-safe: a worker's job threads finish prompts concurrently."""

    def __init__(
        self,
        folders: dict[str, Path],
        comfyui_pid: Callable[[], int | None],
        *,
        enabled: bool,
        keep: int = KEEP_PROMPTS,
    ) -> None:
        self._folders = folders
        self._comfyui_pid = comfyui_pid  # the ComfyUI running now
        self._enabled = enabled
        self._keep = keep
        self._lock = threading.Lock()
        self._pid: int | None = None  # the ComfyUI whose files are kept
        self._recent: deque[frozenset[Path]] = deque()

    def done(self, outputs: list[OutputFile], ran_on: int | None) -> None:
        """A job is done with its prompt's ``outputs`` (stored, or not wanted), which the ComfyUI of pid
        ``ran_on`` saved: they become the newest kept; the files of the prompt that falls out of the last
        ``keep`` are deleted, but for any a kept prompt reported too."""
        if not self._enabled:
            return
        paths = frozenset(p for o in outputs if (p := output_path(self._folders, o)) is not None)
        with self._lock:
            if ran_on is None or ran_on != self._comfyui_pid():
                return  # ComfyUI restarted since: its folders were emptied
            if ran_on != self._pid:
                self._pid = ran_on
                self._recent.clear()
            self._recent.append(paths)
            if len(self._recent) <= self._keep:
                return
            oldest = self._recent.popleft()
            stale = oldest.difference(*self._recent)
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # (the next restart empties the folder anyway)
                log.warning("could not delete ComfyUI's copy of an output, %s: %s", path, exc)
