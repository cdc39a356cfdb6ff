"""The ``local`` object store: files under DATA_DIR, served by the API behind signed links.

Each object is written under a temporary name and renamed into place, so a reader never sees a partial
file. Keys are checked so that none can leave the root (no "..", no absolute parts, no hidden names),
and symbolic links are never followed out of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from comfyjobs.errors import ObjectNotFoundError, StorageError
from comfyjobs.storage.objects import Link
from comfyjobs.storage.signing import UrlSigner

MAX_KEY_PART = 255


def check_key(key: str) -> list[str]:
    """The key's parts; ObjectNotFoundError for a key no object of ours can have."""
    parts = key.rstrip("/").split("/")
    for part in parts:
        if (
            not part
            or part in (".", "..")
            or part.startswith(".")
            or len(part) > MAX_KEY_PART
            or "\0" in part
        ):
            raise ObjectNotFoundError(f"no object {key[:200]!r}")
    return parts


def link_path(key: str) -> str:
    """The API path that serves ``key`` (what a signature covers): "/outputs/<task>/<file>"."""
    return "/" + "/".join(quote(part, safe="") for part in check_key(key))


class LocalObjectStore:
    backend = "local"

    def __init__(self, root: Path, signer: UrlSigner, public_base_url: str) -> None:
        self.root = root
        self._signer = signer
        self._base_url = public_base_url.rstrip("/")

    def path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def _place(self, key: str, write: bytes | Path) -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    if isinstance(write, bytes):
                        fh.write(write)
                    else:
                        with write.open("rb") as src:
                            shutil.copyfileobj(src, fh, 1 << 20)
                Path(tmp).replace(target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot store {key[:200]}: {exc}") from exc

    def put_file(self, key: str, source: Path, content_type: str) -> None:
        target = self.path(key)
        try:  # same file system: a rename, no copy
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
            return
        except OSError:
            pass
        self._place(key, source)  # another file system: copied, then the source removed as a move would
        source.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._place(key, data)

    def exists(self, key: str) -> bool:
        try:
            path = self.path(key)
        except ObjectNotFoundError:
            return False
        return path.is_file() and not path.is_symlink()

    def file(self, key: str) -> Path:
        """The file behind ``key`` to serve; ObjectNotFoundError if there is none (or it is a link)."""
        path = self.path(key)
        if not path.is_file() or path.is_symlink():
            raise ObjectNotFoundError(f"no object {key[:200]!r}")
        return path

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self.file(key).open("rb")

    def delete(self, key_or_prefix: str) -> int:
        try:
            path = self.path(key_or_prefix)
        except ObjectNotFoundError:
            return 0
        try:
            if key_or_prefix.endswith("/"):
                if not path.is_dir() or path.is_symlink():
                    return 0
                count = sum(1 for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path)
                return count
            if path.is_file() or path.is_symlink():
                path.unlink()
                return 1
            return 0
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageError(f"cannot delete {key_or_prefix[:200]}: {exc}") from exc

    def verify(self, key: str, *, expires: int | None, content_type: str | None, sig: str | None) -> None:
        self._signer.verify(link_path(key), expires=expires, content_type=content_type, sig=sig)

    def link(self, key: str, *, content_type: str, filename: str, ttl_s: int) -> Link:
        path = link_path(key)
        expires = int(time.time()) + ttl_s
        query = self._signer.query(path, expires=expires, content_type=content_type)
        return Link(url=f"{self._base_url}{path}?{query}", expires_at=datetime.fromtimestamp(expires, UTC))
