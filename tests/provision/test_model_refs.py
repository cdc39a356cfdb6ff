"""Model URLs: which hosts a client may name (MODEL_URL_ALLOWLIST), the names fetched files get, and
downloads through the SSRF guard against a real HTTP server: a redirect to a private address, a page
that is not a model, a file over MODEL_MAX_BYTES — each refused with nothing left; a token only to its
host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from comfyjobs.errors import ModelDownloadError
from comfyjobs.manifests.model_values import ModelSource, linked_name, source_of
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.settings import Settings
from tests.provision.fileserver import FileServer, Route, running_file_server


@pytest.fixture
def server() -> Iterator[FileServer]:
    with running_file_server() as running:
        yield running


def urls(allowlist: str = "127.0.0.1", max_bytes: int = 10_000, **tokens: str) -> ModelUrls:
    settings = Settings(
        _env_file=None,
        model_url_allowlist=allowlist,
        model_max_bytes=max_bytes,
        **{name: SecretStr(token) for name, token in tokens.items()},
    )
    return ModelUrls.from_settings(settings)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://huggingface.co/org/repo/resolve/main/m.safetensors", True),
        ("https://cdn-lfs.huggingface.co/x/m.safetensors", True),  # a sub-domain of a listed name
        ("https://civitai.com/api/download/models/123", True),
        ("https://evilhuggingface.co/m.safetensors", False),  # not a sub-domain
        ("https://huggingface.co.evil.example/m.safetensors", False),
        ("https://example.com/m.safetensors", False),
        ("ftp://huggingface.co/m.safetensors", False),
        ("http://10.0.0.5/m.safetensors", False),
    ],
)
def test_the_default_allowlist(url: str, allowed: bool) -> None:
    refusal = ModelUrls.from_settings(Settings(_env_file=None)).refusal(url)
    assert (refusal is None) == allowed, refusal


def test_ip_and_network_entries_allow_addresses_in_them() -> None:
    rules = urls("10.0.0.0/8,models.lan")
    assert rules.refusal("http://10.1.2.3/m.safetensors") is None
    assert rules.refusal("http://models.lan/m.safetensors") is None
    refusal = rules.refusal("http://192.168.1.1/m.safetensors")
    assert refusal == "host 192.168.1.1 is not in MODEL_URL_ALLOWLIST (allowed: 10.0.0.0/8, models.lan)"


def test_values_and_their_linked_names() -> None:
    sha = "ab" * 32
    assert source_of("sd15.safetensors") is None  # a file name in the folder
    assert source_of({"url": "https://h/m.safetensors", "sha256": sha.upper()}) == ModelSource(
        "https://h/m.safetensors", sha
    )
    by_sha = linked_name(ModelSource("https://h/x/m.safetensors", sha))
    assert by_sha == f"on-demand/{sha[:16]}-m.safetensors"
    # A URL without a model extension gets one ComfyUI lists; the same URL, the same name.
    civitai = ModelSource("https://civitai.com/api/download/models/123")
    assert linked_name(civitai).endswith("-123.safetensors")
    assert linked_name(civitai) == linked_name(ModelSource("https://civitai.com/api/download/models/123"))


def test_a_token_goes_only_to_its_host_and_never_down_a_redirect(server: FileServer, tmp_path: Path) -> None:
    server.routes["/m.safetensors"] = Route(body=b"w" * 100)
    rules = urls("127.0.0.1", hf_token="hf-secret")
    assert rules.headers_for("huggingface.co") == {"Authorization": "Bearer hf-secret"}
    assert rules.headers_for("cdn-lfs.huggingface.co") == {"Authorization": "Bearer hf-secret"}
    assert rules.headers_for("127.0.0.1") == {}
    rules.download(server.url("/m.safetensors"), tmp_path / "m.safetensors", None, lambda d, t: None)
    [get] = server.gets("/m.safetensors")
    assert "authorization" not in get.headers


def test_a_redirect_to_a_private_address_is_refused_before_connecting(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/m.safetensors"] = Route(status=302, headers={"Location": "http://10.1.2.3/secret"})
    final = tmp_path / "m.safetensors"
    with pytest.raises(ModelDownloadError, match=r"refused: 10\.1\.2\.3 is a private address"):
        urls().download(server.url("/m.safetensors"), final, None, lambda d, t: None)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json", "image/png"])
def test_a_page_that_is_not_a_model_is_refused(server: FileServer, tmp_path: Path, content_type: str) -> None:
    server.routes["/m.safetensors"] = Route(
        body=b"<html>log in</html>", headers={"Content-Type": content_type}
    )
    with pytest.raises(ModelDownloadError, match="not a model file"):
        urls().download(server.url("/m.safetensors"), tmp_path / "m.safetensors", None, lambda d, t: None)
    assert leftovers(tmp_path) == []


def test_a_file_over_model_max_bytes_is_refused(server: FileServer, tmp_path: Path) -> None:
    server.routes["/m.safetensors"] = Route(body=b"w" * 20_000)
    with pytest.raises(ModelDownloadError, match="over the limit of 10000"):
        urls(max_bytes=10_000).download(
            server.url("/m.safetensors"), tmp_path / "m.safetensors", None, lambda d, t: None
        )
    assert leftovers(tmp_path) == []
