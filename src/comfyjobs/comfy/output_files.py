"""ComfyUI's own copies of the outputs: deleted once their job is done with them and ComfyUI can no
longer hand them out again.

A job's outputs are copied out of its ComfyUI's output (or temp) folder into the object store. Left
there, they would fill the disk a second time, and slow ComfyUI down job after job: SaveImage picks its
next file number by listing the whole folder, in Python, on every save (O(files) per image).

They cannot all go at once: a prompt served from ComfyUI's cache reports the files the cached output
node saved earlier, under their old names. With ComfyUI's default (classic) cache a node's result stays
cached only while every prompt run since has the same node (same inputs), and each of those reports its
files again. So the files of this worker's last KEEP_PROMPTS finished prompts are kept, and older ones
deleted, but for a file a kept prompt reported too, or one a job still copies (reported by its prompt,
not stored yet). A deleted name may be used again (SaveImage numbers from the highest file left); it is
never the name of a file still reported. With a cache that keeps older prompts' results (``--cache-lru``,
``--cache-ram`` in COMFYUI_EXTRA_ARGS) nothing is deleted; nor are the files of a prompt that failed
(they go when ComfyUI restarts and its folders are emptied, as always). Not covered: a custom node that
expands into a subgraph keeps its children's results by node id, so an output node inside it could be
served from cache again after more than KEEP_PROMPTS prompts.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from comfyjobs.comfy.client import OutputFile

log = logging.getLogger(__name__)

KEEP_PROMPTS = 4  # (finished prompts may be done with out of ComfyUI's order: PIPELINE_DEPTH at once)
LASTING_CACHE_ARGS = ("--cache-lru", "--cache-ram")  # ComfyUI caches that outlive the next prompt
SHORTEST_UNIQUE = len("--cache-l")  # ComfyUI's argument parser takes any unambiguous prefix


def keeps_older_results(comfyui_args: Sequence[str]) -> bool:
    """Whether ComfyUI, started with these arguments, may serve an older prompt's outputs from cache."""
    names = (arg.split("=", 1)[0] for arg in comfyui_args)
    return any(len(n) >= SHORTEST_UNIQUE and f.startswith(n) for n in names for f in LASTING_CACHE_ARGS)


def output_path(folders: Mapping[str, Path], output: OutputFile) -> Path | None:
    """Where ``output`` lies, given ComfyUI's folders by type ("output", "temp"); None for a text output,
    another type, or a name that would lead out of its folder."""
    base = folders.get(output.type)
    parts = PurePosixPath(output.subfolder.replace("\\", "/"), output.filename).parts
    if base is None or output.text is not None or not parts or any(p in ("..", "/") for p in parts):
        return None
    return base.joinpath(*parts)


class ComfyOutputFiles:
    """The files of one worker's ComfyUI's last KEEP_PROMPTS finished prompts, and of the prompts whose
    jobs still store them (``reported``); older files are deleted. A restarted ComfyUI starts with empty
    folders and numbers its files from 1 again: what was kept of the one before is forgotten then, and
    files of a prompt it ran are left alone (gone with it). Thread-safe: a worker's job threads finish
    prompts concurrently. (A job's files are held from when its prompt's run returns: KEEP_PROMPTS is
    well above the prompts of the other job thread that could end meanwhile.)"""

    def __init__(
        self,
        folders: Mapping[str, Path],
        comfyui_start: Callable[[], int],
        *,
        enabled: bool,
        keep: int = KEEP_PROMPTS,
    ) -> None:
        self._folders = folders
        self._comfyui_start = comfyui_start  # which start of ComfyUI runs now (ComfyProcess.restarts)
        self._enabled = enabled
        self._keep = keep
        self._lock = threading.Lock()
        self._start: int | None = None  # the start of ComfyUI whose files are kept
        self._recent: deque[frozenset[Path]] = deque()
        self._in_use: Counter[Path] = Counter()  # files jobs are storing now

    @contextmanager
    def reported(self, outputs: Sequence[OutputFile], ran_on: int) -> Iterator[None]:
        """While the block runs (its job stores ``outputs``, which ComfyUI's start ``ran_on`` reported
        for its prompt), none of them is deleted; after it they are the newest kept, and the files of the
        prompt that falls out of the last ``keep`` are deleted, but for any still kept or in use."""
        if not self._enabled:
            yield
            return
        paths = frozenset(p for o in outputs if (p := output_path(self._folders, o)) is not None)
        with self._lock:
            self._in_use.update(paths)
        try:
            yield
        finally:
            self._done(paths, ran_on)

    def _done(self, paths: frozenset[Path], ran_on: int) -> None:
        with self._lock:
            self._in_use.subtract(paths)
            self._in_use = +self._in_use  # (drops the counts down to 0)
            if ran_on != self._comfyui_start():
                return  # ComfyUI restarted since: its folders were emptied
            if ran_on != self._start:
                self._start = ran_on
                self._recent.clear()
            self._recent.append(paths)
            if len(self._recent) <= self._keep:
                return
            oldest = self._recent.popleft()
            stale = oldest.difference(*self._recent, self._in_use)
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # (the next restart empties the folder anyway)
                log.warning("could not delete ComfyUI's copy of an output, %s: %s", path, exc)
