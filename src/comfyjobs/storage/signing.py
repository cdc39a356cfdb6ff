"""Signed, expiring links for the ``local`` backend: ``/<key>?expires=<epoch>&type=<mime>&sig=<hmac>``.

The signature (HMAC-SHA256, URL-safe base64) covers the path, the expiry and the content type to serve,
so a link can be neither extended, nor pointed at another file, nor made to serve another type. An
expired or altered link answers 403. The key is URL_SIGNING_KEY, or one made once and kept (mode 0600)
in DATA_DIR, so links survive restarts of the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from comfyjobs.errors import ConfigError, UrlSignatureError
from comfyjobs.settings import Settings

KEY_FILE = "url-signing.key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class UrlSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("URL_SIGNING_KEY must be at least 16 characters")
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner:
        if settings.url_signing_key is not None:
            return cls(settings.url_signing_key.get_secret_value().encode())
        return cls(_load_or_make_key(settings.data_dir / KEY_FILE))

    def _signature(self, path: str, expires: int, content_type: str) -> str:
        message = f"{path}\n{expires}\n{content_type}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def query(self, path: str, *, expires: int, content_type: str) -> str:
        sig = self._signature(path, expires, content_type)
        return urlencode({"expires": expires, "type": content_type, "sig": sig})

    def verify(self, path: str, *, expires: int | None, content_type: str | None, sig: str | None) -> None:
        """Raises UrlSignatureError unless the link is intact and not expired."""
        if expires is None or content_type is None or sig is None:
            raise UrlSignatureError("this link is not signed: use the URL a task or asset read gave you")
        good = self._signature(path, expires, content_type)
        if not hmac.compare_digest(good.encode(), sig.encode()):
            raise UrlSignatureError("this link's signature does not match (altered or from another server)")
        if expires < time.time():
            raise UrlSignatureError("this link has expired: read the task or asset again for a fresh one")


def _load_or_make_key(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32).encode()
    # Written whole under another name, then linked into place: a reader never sees a half-written key,
    # and of two processes starting together the first link wins and both use its key.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return path.read_bytes().strip()
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return key
