"""Hugging Face entries through the real huggingface_hub.hf_hub_download, pointed at a local server that
answers like the Hub's resolve endpoint (huggingface.co is not reachable from the test machines)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from comfyjobs.provision.downloads import DownloadResult, download_models
from comfyjobs.provision.models_ini import parse_models_ini_text
from tests.provision.fileserver import FileServer, Route, closed_port, hf_route, running_file_server

BODY = os.urandom(1024 * 1024 + 7)
BODY_SHA = hashlib.sha256(BODY).hexdigest()
RESOLVE = "/org/repo/resolve/v1.0/unet/model.safetensors"
TOKEN = "hf_test_token"


@pytest.fixture
def server() -> Iterator[FileServer]:
    with running_file_server() as server:
        server.routes[RESOLVE] = hf_route(BODY)
        yield server


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def fetch(
    ini: str, model_dir: Path, hf_cache: Path, endpoint: str, *, token: str | None = TOKEN
) -> DownloadResult:
    [result] = download_models(
        parse_models_ini_text(ini),
        model_dir,
        hf_token=token,
        progress=False,
        hf_endpoint=endpoint,
        hf_cache_dir=hf_cache,
    )
    return result


def test_downloads_through_the_hub_cache_and_links_the_file(
    server: FileServer, model_dir: Path, hf_cache: Path
) -> None:
    result = fetch(
        "[unet]\nmine = hf://org/repo/unet/model.safetensors@v1.0\n", model_dir, hf_cache, server.base_url
    )

    final = model_dir / "unet" / "mine.safetensors"
    assert (result.status, result.path, result.size_bytes, result.reason) == (
        "downloaded",
        final,
        len(BODY),
        None,
    )
    assert final.read_bytes() == BODY
    # The file in the model folder is the cache's blob, hard-linked: one copy on disk.
    [blob] = (hf_cache / "models--org--repo" / "blobs").iterdir()
    assert final.stat().st_ino == blob.stat().st_ino
    assert sorted(p.name for p in final.parent.iterdir()) == ["mine.safetensors"]  # no temporary left
    # The token and the revision reached the Hub.
    hub_requests = [s for s in server.seen if s.path == RESOLVE]
    assert [s.method for s in hub_requests] == ["HEAD", "GET"]
    assert all(s.headers["authorization"] == f"Bearer {TOKEN}" for s in hub_requests)


def test_resolve_url_form_and_checksum(server: FileServer, model_dir: Path, hf_cache: Path) -> None:
    url = "https://huggingface.co/org/repo/resolve/v1.0/unet/model.safetensors"

    result = fetch(f"[unet]\n_ = {url} sha256={BODY_SHA}\n", model_dir, hf_cache, server.base_url)

    assert result.status == "downloaded"
    assert (model_dir / "unet" / "model.safetensors").read_bytes() == BODY


def test_without_a_token_none_is_sent(
    server: FileServer, model_dir: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub's own lookup finds nothing: no variable, no saved login.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(hf_cache / "no-token"))

    result = fetch(
        "[unet]\n_ = hf://org/repo/unet/model.safetensors@v1.0\n",
        model_dir,
        hf_cache,
        server.base_url,
        token=None,
    )

    assert result.status == "downloaded"
    assert all("authorization" not in s.headers for s in server.seen)


def test_checksum_mismatch_places_nothing(server: FileServer, model_dir: Path, hf_cache: Path) -> None:
    wrong = "f" * 64

    result = fetch(
        f"[unet]\n_ = hf://org/repo/unet/model.safetensors@v1.0 sha256={wrong}\n",
        model_dir,
        hf_cache,
        server.base_url,
    )

    assert result.status == "failed"
    assert result.reason == f"sha256 mismatch: expected {wrong}, got {BODY_SHA}"
    assert list((model_dir / "unet").iterdir()) == []


def test_present_file_is_skipped_without_asking_the_hub(
    server: FileServer, model_dir: Path, hf_cache: Path
) -> None:
    final = model_dir / "unet" / "model.safetensors"
    final.parent.mkdir(parents=True)
    final.write_bytes(BODY)

    result = fetch(
        f"[unet]\n_ = hf://org/repo/unet/model.safetensors@v1.0 sha256={BODY_SHA}\n",
        model_dir,
        hf_cache,
        server.base_url,
    )

    assert result.status == "present"
    assert server.seen == []


def test_unreachable_hub_fails_at_once_with_the_reason(model_dir: Path, hf_cache: Path) -> None:
    port = closed_port()

    result = fetch(
        "[unet]\n_ = hf://org/repo/unet/model.safetensors@v1.0\n",
        model_dir,
        hf_cache,
        f"http://127.0.0.1:{port}",
    )

    assert result.status == "failed"
    assert result.reason == (
        f"cannot connect to 127.0.0.1:{port}: Connection refused (and not in the Hugging Face cache)"
    )


def test_unreachable_hub_is_probed_once_per_run(model_dir: Path, hf_cache: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    results = download_models(
        parse_models_ini_text("[unet]\n_ = hf://org/repo/a.safetensors\n_ = hf://org/repo/b.safetensors\n"),
        model_dir,
        hf_token=None,
        progress=False,
        hf_endpoint=endpoint,
        hf_cache_dir=hf_cache,
    )
    assert [r.status for r in results] == ["failed", "failed"]
    assert results[0].reason == results[1].reason


def test_unreachable_hub_still_places_a_cached_file(
    server: FileServer, model_dir: Path, hf_cache: Path
) -> None:
    ini = "[unet]\n_ = hf://org/repo/unet/model.safetensors@v1.0\n"
    assert fetch(ini, model_dir, hf_cache, server.base_url).status == "downloaded"
    (model_dir / "unet" / "model.safetensors").unlink()

    result = fetch(ini, model_dir, hf_cache, f"http://127.0.0.1:{closed_port()}")

    assert result.status == "downloaded"
    assert (model_dir / "unet" / "model.safetensors").read_bytes() == BODY


@pytest.mark.parametrize(
    ("error_code", "status", "reason"),
    [
        ("GatedRepo", 403, "org/repo is gated: accept its terms on the Hub and set HF_TOKEN"),
        ("RepoNotFound", 404, "repository org/repo not found, or private (set HF_TOKEN"),
        ("RevisionNotFound", 404, "revision 'v1.0' not found in org/repo"),
        ("EntryNotFound", 404, "unet/model.safetensors not found in org/repo at revision 'v1.0'"),
    ],
)
def test_hub_errors_become_reasons(
    server: FileServer, model_dir: Path, hf_cache: Path, error_code: str, status: int, reason: str
) -> None:
    server.routes[RESOLVE] = Route(
        status=status, headers={"X-Error-Code": error_code, "X-Repo-Commit": "c" * 40}
    )

    result = fetch(
        "[unet]\n_ = hf://org/repo/unet/model.safetensors@v1.0\n", model_dir, hf_cache, server.base_url
    )

    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.startswith(reason), result.reason
    assert not (model_dir / "unet" / "model.safetensors").exists()
