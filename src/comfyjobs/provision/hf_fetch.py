"""Hugging Face files: fetched by huggingface_hub into its cache, then linked (or copied) into the model
folder.

huggingface_hub brings the token handling (gated and private repositories), its cache (shared with every
other HF tool on the machine, so a file is downloaded once), resume, and progress bars. What it does not
do is fail fast: on a network error it retries with backoff for about 20 s per file. So the Hub is probed
once per run with a short connect timeout; when it is unreachable, only files already in its cache are
placed, and every other entry fails at once with the probe's reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.tqdm import silent_tqdm

from comfyjobs.errors import ModelDownloadError
from comfyjobs.provision.checksums import verify_sha256
from comfyjobs.provision.models_ini import HfSource

log = logging.getLogger(__name__)

_NOT_PROBED = "not probed"


class HfFetcher:
    """One per run: holds the token, the endpoint and whether the endpoint answered."""

    def __init__(
        self,
        *,
        token: str | None,
        session: requests.Session,
        connect_timeout_s: float,
        read_timeout_s: float,
        show_progress: bool,
        endpoint: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.token = token
        # HF_ENDPOINT (a mirror) is honoured through huggingface_hub's own constant when none is given.
        self.endpoint = (endpoint or hf_constants.ENDPOINT).rstrip("/")
        self.cache_dir = cache_dir
        self._session = session
        self._timeout_s = (connect_timeout_s, read_timeout_s)
        self._show_progress = show_progress
        self._unreachable: str | None = _NOT_PROBED

    def fetch(self, source: HfSource, final: Path, *, sha256: str | None) -> int:
        """Puts ``source`` at ``final`` (verified if ``sha256`` is given); returns its size in bytes.
        Raises ModelDownloadError with a one-line reason."""
        unreachable = self._probe()
        try:
            if unreachable is None:
                cached = self._download(source, local_only=False)
            else:
                try:
                    cached = self._download(source, local_only=True)
                except LocalEntryNotFoundError as exc:
                    raise ModelDownloadError(f"{unreachable} (and not in the Hugging Face cache)") from exc
                log.info("%s: Hub unreachable, using the copy in the Hugging Face cache", source)
        except ModelDownloadError:
            raise
        except Exception as exc:  # the boundary with huggingface_hub: whatever it raises becomes a reason
            raise ModelDownloadError(_describe_hf_error(exc, source)) from exc
        return _place(cached, final, sha256)

    def _probe(self) -> str | None:
        """None when the endpoint answers (any HTTP status), else why not. Asked once per run."""
        if self._unreachable != _NOT_PROBED:
            return self._unreachable
        if hf_constants.HF_HUB_OFFLINE:
            self._unreachable = "HF_HUB_OFFLINE is set"
            return self._unreachable
        try:
            self._session.head(self.endpoint, timeout=self._timeout_s, allow_redirects=False).close()
            self._unreachable = None
        except requests.RequestException as exc:
            self._unreachable = describe_request_failure(exc, self.endpoint, self._timeout_s)
            log.warning("Hugging Face endpoint %s unreachable: %s", self.endpoint, self._unreachable)
        return self._unreachable

    def _download(self, source: HfSource, *, local_only: bool) -> Path:
        quiet = not self._show_progress
        path = hf_hub_download(
            source.repo_id,
            source.path_in_repo,
            repo_type=source.repo_type,
            revision=source.revision,
            token=self.token,
            endpoint=self.endpoint,
            cache_dir=self.cache_dir,
            local_files_only=local_only,
            # silent_tqdm is huggingface_hub's own no-op bar; it is not a tqdm subclass, hence the cast.
            tqdm_class=cast(Any, silent_tqdm) if quiet else None,
        )
        return Path(path)


def _place(cached: Path, final: Path, sha256: str | None) -> int:
    """Verifies the cached file, then gives it its final name: a hard link to the cache's blob where both
    live on one filesystem (no second copy of a multi-GB file), else a copy. Through a temporary name, so
    ``final`` is never a half-written file."""
    blob = cached.resolve()  # the snapshot entry is usually a symlink into blobs/
    verify_sha256(blob, sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(blob, tmp)
        except OSError:  # another filesystem, or links not allowed there
            shutil.copyfile(blob, tmp)
        tmp.replace(final)
    except OSError as exc:
        raise ModelDownloadError(f"cannot place {final}: {exc}") from exc
    finally:
        # rename() does nothing when both names are links to one file, which leaves tmp behind.
        tmp.unlink(missing_ok=True)
    return final.stat().st_size


def _describe_hf_error(exc: Exception, source: HfSource) -> str:
    repo = f"{source.repo_id} ({source.repo_type})" if source.repo_type != "model" else source.repo_id
    if isinstance(exc, GatedRepoError):
        return f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN to a token of that account"
    if isinstance(exc, RepositoryNotFoundError):
        return f"repository {repo} not found, or private (set HF_TOKEN to a token that can read it)"
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {source.revision!r} not found in {repo}"
    if isinstance(exc, LocalEntryNotFoundError):  # before EntryNotFoundError, its base class
        root = _root_cause(exc)
        return f"cannot reach the Hub for {repo}: {root}"
    if isinstance(exc, EntryNotFoundError):
        return f"{source.path_in_repo} not found in {repo} at revision {source.revision!r}"
    if isinstance(exc, HfHubHTTPError):
        return f"Hugging Face: {_first_line(exc)}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _root_cause(exc: BaseException) -> str:
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def describe_request_failure(exc: requests.RequestException, url: str, timeout_s: tuple[float, float]) -> str:
    """One line that says what went wrong before any response: DNS, refused, unreachable, timed out."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    where = f"{host}:{parts.port}" if parts.port else host
    connect_timeout_s, read_timeout_s = timeout_s
    if isinstance(exc, requests.ConnectTimeout):
        return (
            f"cannot connect to {where}: no answer within {connect_timeout_s:g} s (host down or unreachable)"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS handshake with {where} failed: {_short(exc)}"
    if isinstance(exc, requests.ConnectionError):
        for cause in _causes(exc):
            if isinstance(cause, socket.gaierror):
                return f"cannot resolve host name {host}: {cause.strerror or cause}"
            if isinstance(cause, OSError) and isinstance(cause.errno, int):
                return f"cannot connect to {where}: {os.strerror(cause.errno)}"
        return f"connection to {where} failed: {_short(exc)}"
    if isinstance(exc, requests.ReadTimeout):
        return f"{where} accepted the connection but did not answer within {read_timeout_s:g} s"
    return f"request to {where} failed: {_short(exc)}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: requests → urllib3 (``reason``, args) → the socket error."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(e for e in linked if isinstance(e, BaseException))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
