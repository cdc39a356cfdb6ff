"""The object store: where outputs and input assets live, behind one small interface.

Two backends: ``local`` (files under DATA_DIR; links are signed API URLs) and ``s3`` (any S3-compatible
bucket; links are presigned GETs). Keys are "/"-separated: ``outputs/<task_id>/<file>`` for a job's
outputs, ``inputs/<tenant>/<sha256>`` for input files (content-addressed: identical bytes are stored once per
tenant).
Every method blocks (disk or network): call them off the event loop, except ``link``, which only signs.
"""

from __future__ import annotations

import mimetypes
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

from comfyjobs.settings import Settings

OUTPUTS_PREFIX = "outputs/"
INPUTS_PREFIX = "inputs/"

# mimetypes misses or varies on a few types ComfyUI writes.
_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".flac": "audio/flac",
    ".opus": "audio/opus",
    ".glb": "model/gltf-binary",
    ".safetensors": "application/octet-stream",
    ".latent": "application/octet-stream",
}


def content_type_for(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def shown_inline(content_type: str) -> bool:
    """Pictures, video, audio and plain text open in the browser; anything else (HTML, SVG, scripts, a
    file of unknown kind) is served as a download, so a link can never run script on our origin."""
    if content_type in ("image/svg+xml", "text/html", "application/xhtml+xml"):
        return False
    return content_type.split("/", 1)[0] in ("image", "video", "audio") or content_type == "text/plain"


def content_disposition(content_type: str, filename: str) -> str:
    """The header value, with an ASCII fallback name and the real one (RFC 6266's filename*)."""
    kind = "inline" if shown_inline(content_type) else "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def output_key(task_id: str, filename: str) -> str:
    return f"{OUTPUTS_PREFIX}{task_id}/{filename}"


def output_prefix(task_id: str) -> str:
    return f"{OUTPUTS_PREFIX}{task_id}/"


def input_key(tenant: str, sha256: str) -> str:
    """Per tenant: a tenant's assets are its own (deleting one never takes another tenant's file)."""
    return f"{INPUTS_PREFIX}{tenant}/{sha256}"


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime


class ObjectStore(Protocol):
    backend: str

    def put_file(self, key: str, source: Path, content_type: str) -> None:
        """Stores the file's bytes under ``key`` (replacing any); ``source`` may be moved or consumed."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """The object's bytes as a file; ObjectNotFoundError if there is none."""

    def delete(self, key_or_prefix: str) -> int:
        """Deletes one object, or every object under a prefix ending in "/"; returns how many."""

    def link(self, key: str, *, content_type: str, filename: str, ttl_s: int) -> Link:
        """A URL anyone holding it can GET until it expires (no API key needed)."""


def open_object_store(settings: Settings) -> ObjectStore:
    """The backend STORAGE_BACKEND names; fails fast (ConfigError/StorageError) if it cannot be used."""
    if settings.storage_backend == "s3":
        from comfyjobs.storage.s3 import S3ObjectStore

        return S3ObjectStore.from_settings(settings)
    from comfyjobs.storage.local import LocalObjectStore
    from comfyjobs.storage.signing import UrlSigner

    return LocalObjectStore(settings.objects_dir, UrlSigner.from_settings(settings), settings.public_base_url)
