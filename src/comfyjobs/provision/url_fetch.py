"""Downloads of large files over http(s) that resume: `<final>.part` grows across attempts and runs, and gets
its final name only once it is complete and its checksum (if given) matches.

The one downloader of models: models.ini's URLs (an operator's: ``UrlPolicy.anywhere()``) and models on
demand (a client's: MODEL_URL_ALLOWLIST's policy, the SSRF guard of URL inputs). Connections go through
``media.fetch.open_stream``: every address and every redirect checked, credentials only to their host.

Failing to connect fails at once (no retry loop: a host that is down now will be down in a second too);
a connection that breaks mid-file is resumed with a Range request, a bounded number of times.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from comfyjobs.errors import BodyCutError, MediaError, ModelDownloadError
from comfyjobs.media.fetch import HeadersFor, Stream, open_stream
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.provision.checksums import verify_sha256

log = logging.getLogger(__name__)

# urllib3 drops the chunk it was reading when the connection breaks, so this is also what a cut costs.
CHUNK_BYTES = 256 * 1024
MAX_RESUMES = 3
# Restarts from zero (416 on a stale partial file, a Range answered from the wrong offset) plus resumes:
# a hard cap, so no server behaviour can keep us looping.
MAX_ATTEMPTS = MAX_RESUMES + 3

_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)$")


OnBytes = Callable[[int, int | None], None]


class _TooLargeError(Exception):
    """More bytes than allowed came: nothing of the file is kept."""


class _InterruptedError(Exception):
    """The body stopped before its end; the partial file is kept and the download resumed."""


@dataclass(frozen=True)
class _Bar:
    """The one progress bar of a file, carried across its attempts."""

    progress: Progress
    task: TaskID


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


@dataclass(frozen=True)
class Transfer:
    """Where and how a download may connect."""

    policy: UrlPolicy
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    headers_for: HeadersFor = lambda _host: {}
    # content type (or None) -> why a file of that type is refused, or None
    refuse_type: Callable[[str | None], str | None] = lambda _type: None


def fetch_url(
    url: str,
    final: Path,
    *,
    sha256: str | None,
    transfer: Transfer,
    show_progress: bool,
    label: str,
    on_bytes: OnBytes | None = None,
    max_bytes: int | None = None,
) -> int:
    """Downloads ``url`` to ``final`` (through ``final``.part); returns its size in bytes. ``on_bytes``
    hears (bytes so far, total or None) as they come; past ``max_bytes`` the download stops, the partial
    file deleted.

    Raises ModelDownloadError with a one-line reason; after a checksum mismatch nothing is left behind,
    after a broken connection the partial file stays for the next run to resume.
    """
    part = part_path(final)
    resumes = 0
    with _progress_bar(show_progress) as progress:
        bar = _Bar(progress, progress.add_task(label, total=None))
        for _ in range(MAX_ATTEMPTS):
            try:
                if _fetch_once(url, part, transfer, bar, label, on_bytes, max_bytes):
                    break
            except _InterruptedError as exc:
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise ModelDownloadError(
                        f"connection broke {resumes} times (last: {exc}); "
                        f"{part.name} is kept, re-run to resume"
                    ) from exc
                log.warning("%s: %s; resuming (%d/%d)", label, exc, resumes, MAX_RESUMES)
        else:
            raise ModelDownloadError(f"gave up after {MAX_ATTEMPTS} attempts (server keeps restarting)")
    try:
        verify_sha256(part, sha256)
    except ModelDownloadError:
        part.unlink(missing_ok=True)  # a complete file with the wrong bytes: resuming it can't help
        raise
    part.replace(final)
    return final.stat().st_size


def _fetch_once(
    url: str,
    part: Path,
    transfer: Transfer,
    bar: _Bar,
    label: str,
    on_bytes: OnBytes | None = None,
    max_bytes: int | None = None,
) -> bool:
    """One GET, from the partial file's end. True: the partial file is complete. False: start again."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: a compressed body would make byte offsets (Range, sizes) meaningless.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with open_stream(
            url,
            policy=transfer.policy,
            connect_timeout_s=transfer.connect_timeout_s,
            read_timeout_s=transfer.read_timeout_s,
            headers=headers,
            headers_for=transfer.headers_for,
        ) as response:
            return _receive(response, part, offset, transfer, bar, label, on_bytes, max_bytes)
    except BodyCutError as exc:
        raise _InterruptedError(str(exc)) from exc
    except MediaError as exc:
        raise ModelDownloadError(exc.message) from exc


def _receive(
    response: Stream,
    part: Path,
    offset: int,
    transfer: Transfer,
    bar: _Bar,
    label: str,
    on_bytes: OnBytes | None,
    max_bytes: int | None,
) -> bool:
    status = response.status
    content_range = _parse_content_range(response.headers.get("content-range"))
    if status == 416 and offset:
        total = content_range[1] if content_range else None
        if total == offset:
            return True  # an earlier run got every byte but stopped before renaming
        log.warning("%s: stale partial file (%d bytes, server has %s); starting again", label, offset, total)
        part.unlink()
        return False
    if status == 206:
        if content_range is None or content_range[0] != offset:
            log.warning("%s: server answered a different range (%s); starting again", label, content_range)
            part.unlink()
            return False
        total = content_range[1]
        mode = "ab"
    elif status == 200:
        if offset:
            log.info("%s: server does not resume (ignored Range); starting again", label)
        offset = 0
        length = response.headers.get("content-length")
        total = int(length) if length and length.isdigit() else None
        mode = "wb"
    else:
        raise ModelDownloadError(_http_status_reason(response))
    content_type = (response.headers.get("content-type") or "").split(";", 1)[0].strip().lower() or None
    refused = transfer.refuse_type(content_type)
    if refused is not None:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(refused)

    written = offset
    if max_bytes is not None and total is not None and total > max_bytes:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(f"the file is {total} bytes, over the limit of {max_bytes}")
    bar.progress.update(bar.task, total=total, completed=offset)
    try:
        with part.open(mode) as f:
            for chunk in response.chunks(CHUNK_BYTES):
                f.write(chunk)
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise _TooLargeError(f"over the limit of {max_bytes} bytes")
                bar.progress.update(bar.task, completed=written)
                if on_bytes is not None:
                    on_bytes(written, total)
    except _TooLargeError as exc:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(f"the file is {exc}") from None
    except BodyCutError as exc:  # before OSError: the connection's, not the file's
        raise _InterruptedError(f"after {written} bytes: {exc.message}") from exc
    except OSError as exc:
        raise ModelDownloadError(f"cannot write {part}: {exc}") from exc

    if total is not None and written < total:
        raise _InterruptedError(f"got {written} of {total} bytes")
    if total is not None and written > total:
        part.unlink()
        raise ModelDownloadError(f"server sent {written} bytes, more than the {total} it announced")
    return True


def _http_status_reason(response: Stream) -> str:
    reason = f"HTTP {response.status} {response.reason or ''}".rstrip()
    if response.status in (401, 403):
        return f"{reason} (the file needs credentials or is not public)"
    if response.status == 404:
        return f"{reason} (no such file at this URL)"
    return reason


def _parse_content_range(value: str | None) -> tuple[int | None, int | None] | None:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL`` as (start, total); None if absent or malformed."""
    match = _CONTENT_RANGE.match(value.strip()) if value else None
    if match is None:
        return None
    start = int(match["start"]) if match["start"] is not None else None
    total = int(match["total"]) if match["total"] != "*" else None
    return start, total


def _progress_bar(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        # Bars only for a person watching: in logs and CI a redrawn line is noise.
        disable=not (enabled and console.is_terminal),
    )
