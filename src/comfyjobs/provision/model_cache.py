"""A host's cache of models fetched on demand (MODEL_CACHE_DIR): each file downloaded once per host, kept
under a content address, used by any number of jobs at once, and evicted least recently used first when
the cache passes its cap (MODEL_CACHE_MAX_GB), never while a job uses it.

Layout, per entry (``key``: the file's sha256 when it is known, else ``url-`` and the sha256 of its URL):

  <root>/<key>/<name>        the file (its name: the URL's last path segment), complete and verified
  <root>/<key>/<name>.part   a download under way or cut short (resumed by the next one)
  <root>/<key>.fetch.lock    held exclusively while it is downloaded: every other job thread and worker
                             process of the host waits on it for that one download, never a second
  <root>/<key>.use.lock      held shared by each job using the file; eviction takes it exclusively
                             without waiting, and skips the entry if it cannot
  <root>/<key>/.used         its mtime set at each use (to the ns: the kernel's own touch is too coarse
                             to order uses close together): it orders eviction

Locks are flock(2) locks: they hold between threads (each opens its own file) and between processes,
and go with a process that dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from comfyjobs.errors import ModelDownloadError
from comfyjobs.manifests.model_values import ModelSource
from comfyjobs.provision.url_fetch import OnBytes

log = logging.getLogger(__name__)

USED = ".used"

# (url, final path, sha256 or None, on_bytes(done, total)) -> size: a resumable download that leaves
# nothing at ``final`` unless complete and verified (``ModelUrls.download``: provision.url_fetch's).
Download = Callable[[str, Path, str | None, OnBytes], int]


@dataclass(frozen=True)
class CachedModel:
    key: str
    path: Path
    size_bytes: int
    last_used_ns: int  # epoch ns


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[IO[bytes] | None]:
    """``mode`` LOCK_SH or LOCK_EX, waiting; with LOCK_NB: None when it is held elsewhere."""
    handle = path.open("ab")
    try:
        try:
            fcntl.flock(handle.fileno(), mode)
        except BlockingIOError:
            yield None
            return
        yield handle
    finally:
        handle.close()  # (releases the lock)


class ModelCache:
    def __init__(self, root: Path, max_bytes: int | None, download: Download) -> None:
        self.root = root
        self.max_bytes = max_bytes  # None: no cap
        self._download = download

    def _entry(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def use(self, source: ModelSource, on_bytes: OnBytes = lambda done, total: None) -> Iterator[Path]:
        """The cached file of ``source``, downloaded first if it is not there (once per host: others
        wait for that download), held in use (not evicted) until the block ends. Raises
        ModelDownloadError with the reason; nothing half-written is left under the file's name."""
        self.root.mkdir(parents=True, exist_ok=True)
        key = source.key
        entry = self._entry(key)
        final = entry / source.name
        with _flock(self.root / f"{key}.use.lock", fcntl.LOCK_SH):
            with _flock(self.root / f"{key}.fetch.lock", fcntl.LOCK_EX):
                if not final.is_file():
                    entry.mkdir(exist_ok=True)
                    log.info("model %s: downloading %s", key[:16], source.url)
                    try:
                        self._download(source.url, final, source.sha256, on_bytes)
                    except ModelDownloadError:
                        with contextlib.suppress(OSError):
                            entry.rmdir()  # (empty unless a cut download's .part waits to be resumed)
                        raise
                stamp = time.time_ns()
                (entry / USED).touch()
                os.utime(entry / USED, ns=(stamp, stamp))
            self.evict(keep=key)
            yield final

    def entries(self) -> list[CachedModel]:
        """What the cache holds (complete files), least recently used first."""
        found: list[CachedModel] = []
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            if not entry.is_dir():
                continue
            used = entry / USED
            files = [
                f for f in entry.iterdir() if f.is_file() and f.name != USED and not f.name.endswith(".part")
            ]
            for f in files:
                stamp = used.stat().st_mtime_ns if used.exists() else f.stat().st_mtime_ns
                found.append(CachedModel(entry.name, f, f.stat().st_size, stamp))
        return sorted(found, key=lambda m: m.last_used_ns)

    def size_bytes(self) -> int:
        return sum(m.size_bytes for m in self.entries())

    def evict(self, keep: str | None = None, *, dry_run: bool = False) -> list[CachedModel]:
        """Least recently used first, until the cache is within its cap: entries no job uses (their
        use lock is free) other than ``keep``. Returns what went (or would go, ``dry_run``)."""
        if self.max_bytes is None:
            return []
        entries = self.entries()
        total = sum(m.size_bytes for m in entries)
        gone = []
        for model in entries:
            if total <= self.max_bytes:
                break
            if model.key == keep:
                continue
            with _flock(self.root / f"{model.key}.use.lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
                if held is None:
                    continue  # in use by a job: never evicted
                if not dry_run:
                    shutil.rmtree(self._entry(model.key), ignore_errors=True)
                    log.info(
                        "model %s evicted (%d bytes, MODEL_CACHE_MAX_GB)", model.key[:16], model.size_bytes
                    )
            total -= model.size_bytes
            gone.append(model)
        return gone


__all__ = ["CachedModel", "Download", "ModelCache", "ModelDownloadError", "ModelSource"]
