"""The host's cache of models fetched on demand, against a real HTTP server that honours Range requests:
one download however many want it at once, least recently used evicted past the cap but never one in
use, a wrong sha256 leaves nothing, a cut download resumes."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comfyjobs.errors import ModelDownloadError
from comfyjobs.manifests.model_values import ModelSource
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.provision.model_cache import ModelCache
from comfyjobs.provision.url_fetch import Transfer, fetch_url
from tests.provision.fileserver import FileServer, Route, running_file_server


@pytest.fixture
def server() -> Iterator[FileServer]:
    with running_file_server() as running:
        yield running


def _download(url: str, final: Path, sha256: str | None, on_bytes: Callable[[int, int | None], None]) -> int:
    return fetch_url(
        url, final, sha256=sha256, transfer=Transfer(UrlPolicy(["127.0.0.1"])), show_progress=False,
        label=final.name, on_bytes=on_bytes,
    )  # fmt: skip


def _cache(tmp_path: Path, max_bytes: int | None = None) -> ModelCache:
    return ModelCache(tmp_path / "cache", max_bytes, _download)


def test_two_jobs_wanting_one_model_download_it_once(server: FileServer, tmp_path: Path) -> None:
    body = b"weights" * 50_000
    server.routes["/org/m.safetensors"] = Route(body=body)
    cache = _cache(tmp_path)
    source = ModelSource(server.url("/org/m.safetensors"), hashlib.sha256(body).hexdigest())
    paths: list[Path] = []
    start = threading.Barrier(2)

    def job() -> None:
        start.wait()
        with cache.use(source) as path:
            paths.append(path)
            assert path.read_bytes() == body

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    assert len(server.gets("/org/m.safetensors")) == 1
    with cache.use(source):  # a later job: from the cache
        pass
    assert len(server.gets("/org/m.safetensors")) == 1


def test_past_the_cap_the_least_recently_used_model_not_in_use_goes(
    server: FileServer, tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        server.routes[f"/{name}.safetensors"] = Route(body=name.encode() * 1000)
    cache = _cache(tmp_path, max_bytes=2500)  # room for two of them
    a, b, c = (ModelSource(server.url(f"/{n}.safetensors")) for n in ("a", "b", "c"))
    with cache.use(a):
        pass
    with cache.use(b), cache.use(a):  # a used again: b is now the least recently used, but in use
        with cache.use(c):
            pass
        # Over the cap while all three are in use: none was evicted under a job.
        assert {m.path.name for m in cache.entries()} == {"a.safetensors", "b.safetensors", "c.safetensors"}
    with cache.use(c):
        pass
    assert {m.path.name for m in cache.entries()} == {"a.safetensors", "c.safetensors"}  # b was oldest


def test_a_wrong_sha256_fails_with_both_digests_and_leaves_nothing(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/x.safetensors"] = Route(body=b"not what you think")
    cache = _cache(tmp_path)
    with (
        pytest.raises(ModelDownloadError, match="sha256 mismatch"),
        cache.use(ModelSource(server.url("/x.safetensors"), "0" * 64)),
    ):
        pass
    assert cache.entries() == []
    assert not list((tmp_path / "cache").glob("*/*"))  # no file, no .part


def test_a_cut_download_resumes_where_it_stopped(server: FileServer, tmp_path: Path) -> None:
    body = bytes(range(256)) * 4000
    server.routes["/big.safetensors"] = Route(body=body, cut_times=1)
    cache = _cache(tmp_path)
    seen: list[tuple[int, int | None]] = []
    with cache.use(
        ModelSource(server.url("/big.safetensors")), lambda done, total: seen.append((done, total))
    ) as path:
        assert path.read_bytes() == body
    first, second = server.gets("/big.safetensors")
    assert "range" not in first.headers and second.headers["range"].startswith("bytes=")
    assert seen[-1] == (len(body), len(body))  # progress to the last byte, of a known total
