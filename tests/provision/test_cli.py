"""`run_models_download` exit codes and the summary table."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from comfyjobs.provision.cli import print_summary, run_models_download
from comfyjobs.provision.downloads import DownloadResult
from comfyjobs.provision.models_ini import parse_models_ini_text
from tests.provision.fileserver import FileServer, Route, closed_port, running_file_server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[FileServer]:
    with running_file_server() as server:
        server.routes["/ok.safetensors"] = Route(body=b"model bytes")
        yield server


def write_ini(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_all_downloaded_is_0(server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = write_ini(tmp_path, f"[checkpoints]\n_ = {server.url('/ok.safetensors')}\n")

    assert run_models_download(ini, tmp_path / "models", allow_missing=False, hf_token=None) == 0
    assert (tmp_path / "models" / "checkpoints" / "ok.safetensors").read_bytes() == b"model bytes"
    out = capsys.readouterr().out
    assert "ok.safetensors" in out
    assert "downloaded" in out


def test_a_failure_is_1_unless_allowed(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = write_ini(
        tmp_path,
        f"[checkpoints]\n_ = {server.url('/ok.safetensors')}\n_ = http://127.0.0.1:{closed_port()}/gone.ckpt\n",
    )

    assert run_models_download(ini, tmp_path / "models", allow_missing=False, hf_token=None) == 1
    assert "Connection refused" in capsys.readouterr().out

    assert run_models_download(ini, tmp_path / "models", allow_missing=True, hf_token=None) == 0
    captured = capsys.readouterr()
    assert "present" in captured.out  # the first file is not fetched twice
    assert "1 model(s) missing; going on without them" in captured.err


def test_invalid_models_ini_is_3_with_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = write_ini(tmp_path, "[checkpoints]\n_ = ftp://example.com/a.ckpt\n")

    assert run_models_download(ini, tmp_path / "models", allow_missing=True, hf_token=None) == 3
    err = capsys.readouterr().err
    assert f"{ini}:2: unsupported scheme ftp://" in err


def test_missing_models_ini_is_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_models_download(tmp_path / "absent.ini", tmp_path, allow_missing=False, hf_token=None) == 3
    assert "cannot read" in capsys.readouterr().err


def test_shipped_models_ini_downloads_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = REPO / "install" / "configs" / "models.ini"

    assert run_models_download(ini, tmp_path / "models", allow_missing=False, hf_token=None) == 0
    assert "nothing to download" in capsys.readouterr().out
    assert not (tmp_path / "models").exists()


def test_summary_has_a_row_per_entry_and_counts_failures() -> None:
    a, b, c = parse_models_ini_text(
        "[checkpoints]\n_ = https://e.com/a.safetensors\n[loras]\n_ = https://e.com/b.safetensors\n"
        "_ = https://e.com/c.safetensors\n"
    )
    results = [
        DownloadResult(a, "downloaded", Path("m/checkpoints/a.safetensors"), 2_000_000),
        DownloadResult(b, "present", Path("m/loras/b.safetensors"), 512),
        DownloadResult(c, "failed", Path("m/loras/c.safetensors"), None, "HTTP 404 Not Found"),
    ]
    out = io.StringIO()

    failures = print_summary(results, Console(file=out, width=200))

    assert failures == 1
    rows = [line for line in out.getvalue().splitlines() if ".safetensors" in line]
    assert len(rows) == 3
    assert "checkpoints" in rows[0] and "downloaded" in rows[0] and "2.0 MB" in rows[0]
    assert "present" in rows[1] and "512 bytes" in rows[1]
    assert "failed" in rows[2] and "HTTP 404 Not Found" in rows[2] and "-" in rows[2]
