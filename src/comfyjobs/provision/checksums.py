"""SHA-256 of model files, and the one place a mismatch is turned into an error."""

from __future__ import annotations

import hashlib
from pathlib import Path

from comfyjobs.errors import ModelDownloadError

READ_CHUNK_BYTES = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> None:
    """Raises ModelDownloadError (with both digests) unless ``path`` hashes to ``expected``; the caller
    decides what happens to the file."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelDownloadError(f"sha256 mismatch: expected {expected}, got {actual}")
