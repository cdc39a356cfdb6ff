"""Plain-URL downloads against a real local HTTP server: resume, Range quirks, checksums, dead hosts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyjobs.provision.downloads import DownloadResult, download_models
from comfyjobs.provision.models_ini import ModelEntry, parse_models_ini_text
from comfyjobs.provision.url_fetch import MAX_RESUMES
from tests.provision.fileserver import FileServer, Route, blackhole_address, closed_port, running_file_server

BODY = os.urandom(3 * 1024 * 1024 + 123)  # several read chunks, and not a round size
BODY_SHA = hashlib.sha256(BODY).hexdigest()
PATH = "/files/model.safetensors"


@pytest.fixture
def server() -> Iterator[FileServer]:
    with running_file_server() as server:
        server.routes[PATH] = Route(body=BODY)
        yield server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def entries(lines: str) -> list[ModelEntry]:
    return parse_models_ini_text(lines, source_name="test.ini")


def download(entry_lines: str, model_dir: Path, *, connect_timeout_s: float = 5) -> list[DownloadResult]:
    return download_models(
        entries(entry_lines), model_dir, hf_token=None, progress=False, connect_timeout_s=connect_timeout_s
    )


def one(entry_lines: str, model_dir: Path, *, connect_timeout_s: float = 5) -> DownloadResult:
    [result] = download(entry_lines, model_dir, connect_timeout_s=connect_timeout_s)
    return result


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_and_names_the_file(server: FileServer, model_dir: Path) -> None:
    result = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)

    final = model_dir / "checkpoints" / "model.safetensors"
    assert (result.status, result.path, result.size_bytes, result.reason) == (
        "downloaded",
        final,
        len(BODY),
        None,
    )
    assert final.read_bytes() == BODY
    assert leftovers(final.parent) == ["model.safetensors"]  # no .part left behind
    [get] = server.gets(PATH)
    assert "range" not in get.headers
    assert get.headers["accept-encoding"] == "identity"


def test_renamed_into_a_sub_folder_with_a_verified_checksum(server: FileServer, model_dir: Path) -> None:
    result = one(f"[loras]\nstyle/Mine = {server.url(PATH)} sha256={BODY_SHA}\n", model_dir)

    assert result.status == "downloaded"
    assert result.path == model_dir / "loras" / "style" / "Mine.safetensors"
    assert result.path.read_bytes() == BODY


def test_resumes_after_the_connection_is_cut(server: FileServer, model_dir: Path) -> None:
    server.routes[PATH].cut_times = 1

    result = one(f"[checkpoints]\n_ = {server.url(PATH)} sha256={BODY_SHA}\n", model_dir)

    assert result.status == "downloaded", result.reason
    assert result.path.read_bytes() == BODY
    first, second = server.gets(PATH)
    assert "range" not in first.headers
    offset = int(second.headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= len(BODY) // 2  # resumed from what had arrived, not from zero


def test_gives_up_after_a_bounded_number_of_resumes_and_keeps_the_partial_file(
    server: FileServer, model_dir: Path
) -> None:
    server.routes[PATH].cut_times = 100

    result = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)

    assert result.status == "failed"
    assert result.reason is not None
    assert f"connection broke {MAX_RESUMES + 1} times" in result.reason
    assert "re-run to resume" in result.reason
    assert len(server.gets(PATH)) == MAX_RESUMES + 1
    assert leftovers(model_dir / "checkpoints") == ["model.safetensors.part"]

    # The next run picks the partial file up.
    server.routes[PATH].cut_times = 0
    again = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)
    assert again.status == "downloaded"
    assert again.path.read_bytes() == BODY
    assert server.gets(PATH)[-1].headers["range"] != "bytes=0-"


def test_checksum_mismatch_is_refused_and_leaves_nothing(server: FileServer, model_dir: Path) -> None:
    wrong = "0" * 64

    result = one(f"[checkpoints]\n_ = {server.url(PATH)} sha256={wrong}\n", model_dir)

    assert result.status == "failed"
    assert result.reason == f"sha256 mismatch: expected {wrong}, got {BODY_SHA}"
    assert leftovers(model_dir / "checkpoints") == []


def test_present_file_without_checksum_is_skipped(server: FileServer, model_dir: Path) -> None:
    final = model_dir / "checkpoints" / "model.safetensors"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"whatever is there")

    result = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)

    assert (result.status, result.size_bytes) == ("present", len(b"whatever is there"))
    assert server.seen == []


def test_present_file_with_matching_checksum_is_skipped(server: FileServer, model_dir: Path) -> None:
    final = model_dir / "checkpoints" / "model.safetensors"
    final.parent.mkdir(parents=True)
    final.write_bytes(BODY)

    result = one(f"[checkpoints]\n_ = {server.url(PATH)} sha256={BODY_SHA}\n", model_dir)

    assert result.status == "present"
    assert server.seen == []


def test_present_file_with_wrong_checksum_is_downloaded_again(server: FileServer, model_dir: Path) -> None:
    final = model_dir / "checkpoints" / "model.safetensors"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"corrupt")

    result = one(f"[checkpoints]\n_ = {server.url(PATH)} sha256={BODY_SHA}\n", model_dir)

    assert result.status == "downloaded"
    assert final.read_bytes() == BODY


def test_wrong_present_file_stays_when_its_replacement_fails(model_dir: Path) -> None:
    final = model_dir / "checkpoints" / "model.safetensors"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"old")
    url = f"http://127.0.0.1:{closed_port()}/model.safetensors"

    result = one(f"[checkpoints]\n_ = {url} sha256={BODY_SHA}\n", model_dir)

    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.endswith("; the file present has a different sha256")
    assert final.read_bytes() == b"old"


def test_server_that_ignores_range_restarts_from_zero(server: FileServer, model_dir: Path) -> None:
    server.routes[PATH].ignore_range = True
    part = model_dir / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 1000)  # would corrupt the file if appended to

    result = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)

    assert result.status == "downloaded"
    assert result.path.read_bytes() == BODY
    [get] = server.gets(PATH)
    assert get.headers["range"] == "bytes=1000-"  # asked to resume, got a 200 with everything


def test_complete_partial_file_is_finished_on_416(server: FileServer, model_dir: Path) -> None:
    part = model_dir / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY)  # an earlier run got every byte, then stopped before the rename

    result = one(f"[checkpoints]\n_ = {server.url(PATH)} sha256={BODY_SHA}\n", model_dir)

    assert result.status == "downloaded"
    assert result.path.read_bytes() == BODY
    assert len(server.gets(PATH)) == 1
    assert leftovers(part.parent) == ["model.safetensors"]


def test_stale_partial_file_larger_than_the_file_starts_again(server: FileServer, model_dir: Path) -> None:
    part = model_dir / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY + b"extra bytes from some other file")

    result = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)

    assert result.status == "downloaded"
    assert result.path.read_bytes() == BODY
    first, second = server.gets(PATH)
    assert "range" in first.headers
    assert "range" not in second.headers


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "HTTP 404 Not Found (no such file at this URL)"),
        (403, "HTTP 403 Forbidden (the file needs credentials"),
    ],
)
def test_http_errors_fail_with_the_status(
    server: FileServer, model_dir: Path, status: int, reason: str
) -> None:
    server.routes[PATH] = Route(status=status)

    result = one(f"[checkpoints]\n_ = {server.url(PATH)}\n", model_dir)

    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.startswith(reason)
    assert leftovers(model_dir / "checkpoints") == []


def test_connection_refused_fails_with_a_clear_reason(model_dir: Path) -> None:
    port = closed_port()

    result = one(f"[checkpoints]\n_ = http://127.0.0.1:{port}/model.safetensors\n", model_dir)

    assert result.status == "failed"
    assert result.reason == f"cannot connect to 127.0.0.1:{port}: Connection refused"


def test_host_that_never_answers_fails_at_the_connect_timeout(model_dir: Path) -> None:
    with blackhole_address() as (host, port):
        result = one(
            f"[checkpoints]\n_ = http://{host}:{port}/model.safetensors\n", model_dir, connect_timeout_s=0.5
        )

    assert result.status == "failed"
    assert result.reason == (
        f"cannot connect to {host}:{port}: no answer within 0.5 s (host down or unreachable)"
    )


def test_unknown_host_name_fails_with_a_dns_reason(model_dir: Path) -> None:
    # .invalid never resolves (RFC 6761).
    result = one("[checkpoints]\n_ = https://models.invalid/model.safetensors\n", model_dir)

    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.startswith("cannot resolve host name models.invalid")


def test_one_failure_does_not_stop_the_others(server: FileServer, model_dir: Path) -> None:
    results = download(
        f"[checkpoints]\n"
        f"a = http://127.0.0.1:{closed_port()}/model.safetensors\n"
        f"b = {server.url('/missing.safetensors')}\n"
        f"c = {server.url(PATH)}\n",
        model_dir,
    )

    assert [(r.entry.filename, r.status) for r in results] == [
        ("a.safetensors", "failed"),
        ("b.safetensors", "failed"),
        ("c.safetensors", "downloaded"),
    ]
    assert [r.ok for r in results] == [False, False, True]


def test_progress_bars_on_a_non_terminal_are_harmless(server: FileServer, model_dir: Path) -> None:
    [result] = download_models(
        entries(f"[checkpoints]\n_ = {server.url(PATH)}\n"), model_dir, hf_token=None, progress=True
    )
    assert result.status == "downloaded"
