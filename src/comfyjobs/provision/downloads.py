"""Fetch every models.ini entry into the model folder: one result per entry, and a failure never stops the
others (the summary then lists everything that is missing at once).

A file gets its final name only once it is complete and, when the entry gives a sha256, verified; so a
file under its final name is trusted: without a sha256 it is skipped, with one it is checked and fetched
again if it differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import requests

from comfyjobs import __version__
from comfyjobs.errors import ModelDownloadError
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.provision.checksums import sha256_file
from comfyjobs.provision.hf_fetch import HfFetcher
from comfyjobs.provision.models_ini import HfSource, ModelEntry
from comfyjobs.provision.url_fetch import Transfer, fetch_url

log = logging.getLogger(__name__)

DownloadStatus = Literal["downloaded", "present", "failed"]


@dataclass(frozen=True)
class DownloadResult:
    entry: ModelEntry
    status: DownloadStatus
    path: Path  # where the file is (or would be): model_dir/folder/filename
    size_bytes: int | None = None
    reason: str | None = None  # why it failed; None otherwise

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def download_models(
    entries: Sequence[ModelEntry],
    model_dir: Path,
    *,
    hf_token: str | None,
    connect_timeout_s: float = 5,
    read_timeout_s: float = 60,
    progress: bool = True,
    hf_endpoint: str | None = None,
    hf_cache_dir: Path | None = None,
) -> list[DownloadResult]:
    """Fetches what is missing, in order; returns one result per entry.

    ``hf_token``: for gated and private repositories (None: huggingface_hub's own lookup, HF_TOKEN or a
    saved login). ``progress``: bars on stderr, and only when it is a terminal. ``hf_endpoint`` (default:
    HF_ENDPOINT or huggingface.co) and ``hf_cache_dir`` (default: huggingface_hub's cache) exist for
    mirrors and tests.
    """
    with requests.Session() as session:
        session.headers["User-Agent"] = f"comfyjobs/{__version__}"
        hf = HfFetcher(
            token=hf_token,
            session=session,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            show_progress=progress,
            endpoint=hf_endpoint,
            cache_dir=hf_cache_dir,
        )

        # models.ini is the operator's own file: its URLs may point anywhere, a NAS on the LAN included.
        transfer = Transfer(UrlPolicy.anywhere(), connect_timeout_s, read_timeout_s)

        def fetch(entry: ModelEntry, final: Path) -> int:
            if isinstance(entry.source, HfSource):
                return hf.fetch(entry.source, final, sha256=entry.sha256)
            return fetch_url(
                entry.source.url,
                final,
                sha256=entry.sha256,
                transfer=transfer,
                show_progress=progress,
                label=entry.target,
            )

        return [_download_one(entry, model_dir, fetch) for entry in entries]


def _download_one(
    entry: ModelEntry, model_dir: Path, fetch: Callable[[ModelEntry, Path], int]
) -> DownloadResult:
    final = model_dir / entry.folder / entry.filename
    replacing = False
    if final.is_file():
        if entry.sha256 is None:
            return DownloadResult(entry, "present", final, final.stat().st_size)
        actual = sha256_file(final)
        if actual == entry.sha256:
            return DownloadResult(entry, "present", final, final.stat().st_size)
        log.warning("%s: sha256 is %s, expected %s; downloading it again", entry.target, actual, entry.sha256)
        replacing = True

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        size_bytes = fetch(entry, final)
    except (ModelDownloadError, OSError) as exc:
        reason = exc.message if isinstance(exc, ModelDownloadError) else str(exc)
        if replacing:
            # The old file stays where it was (it is only ever replaced by a verified one); say so.
            reason += "; the file present has a different sha256"
        log.error("%s: %s", entry.target, reason)
        return DownloadResult(entry, "failed", final, None, reason)
    log.info("%s: downloaded (%d bytes)", entry.target, size_bytes)
    return DownloadResult(entry, "downloaded", final, size_bytes)
