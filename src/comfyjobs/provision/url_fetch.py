"""Plain http(s) downloads that resume: `<final>.part` grows across attempts and runs, and gets its final name
only once it is complete and its checksum (if given) matches.

Failing to connect fails at once (no retry loop: a host that is down now will be down in a second too);
a connection that breaks mid-file is resumed with a Range request, a bounded number of times.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
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

from comfyjobs.errors import ModelDownloadError
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


def fetch_url(
    url: str,
    final: Path,
    *,
    sha256: str | None,
    session: requests.Session,
    connect_timeout_s: float,
    read_timeout_s: float,
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
                timeouts = (connect_timeout_s, read_timeout_s)
                if _fetch_once(url, part, session, timeouts, bar, label, on_bytes, max_bytes):
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
    session: requests.Session,
    timeout_s: tuple[float, float],
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
        response = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except requests.RequestException as exc:
        raise ModelDownloadError(describe_request_failure(exc, url, timeout_s)) from exc

    with response:
        status = response.status_code
        content_range = _parse_content_range(response.headers.get("Content-Range"))
        if status == 416 and offset:
            total = content_range[1] if content_range else None
            if total == offset:
                return True  # an earlier run got every byte but stopped before renaming
            log.warning(
                "%s: stale partial file (%d bytes, server has %s); starting again", label, offset, total
            )
            part.unlink()
            return False
        if status == 206:
            if content_range is None or content_range[0] != offset:
                log.warning(
                    "%s: server answered a different range (%s); starting again", label, content_range
                )
                part.unlink()
                return False
            total = content_range[1]
            mode = "ab"
        elif status == 200:
            if offset:
                log.info("%s: server does not resume (ignored Range); starting again", label)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise ModelDownloadError(_http_status_reason(response))

        written = offset
        if max_bytes is not None and total is not None and total > max_bytes:
            part.unlink(missing_ok=True)
            raise ModelDownloadError(f"the file is {total} bytes, over the limit of {max_bytes}")
        bar.progress.update(bar.task, total=total, completed=offset)
        try:
            with part.open(mode) as f:
                for chunk in response.iter_content(CHUNK_BYTES):
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
        except requests.RequestException as exc:  # before OSError: requests' errors are OSErrors too
            raise _InterruptedError(f"after {written} bytes: {_short(exc)}") from exc
        except OSError as exc:
            raise ModelDownloadError(f"cannot write {part}: {exc}") from exc

    if total is not None and written < total:
        raise _InterruptedError(f"got {written} of {total} bytes")
    if total is not None and written > total:
        part.unlink()
        raise ModelDownloadError(f"server sent {written} bytes, more than the {total} it announced")
    return True


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


def _http_status_reason(response: requests.Response) -> str:
    reason = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    if response.status_code in (401, 403):
        return f"{reason} (the file needs credentials or is not public)"
    if response.status_code == 404:
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
