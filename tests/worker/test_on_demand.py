"""A job's models on demand, against a real HTTP server: a URL parameter's file and a listed model the
host lacks are downloaded once into the cache and linked into ComfyUI's folder under the names the graph
uses; a refused URL or a wrong sha256 fails with the field named; links to evicted files go."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyjobs.errors import ModelDownloadError
from comfyjobs.manifests.model_values import linked_name, source_of
from comfyjobs.manifests.registry import Workflow
from comfyjobs.provision.model_cache import ModelCache
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.settings import Settings
from comfyjobs.worker.on_demand import ModelsHere, OnDemandModels
from tests.manifests.helpers import base_params, load, model_param, write_manifests
from tests.provision.fileserver import FileServer, Route, running_file_server

BODY = b"weights" * 1000
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with running_file_server() as running:
        running.routes["/m.safetensors"] = Route(body=BODY)
        running.routes["/listed.safetensors"] = Route(body=BODY + b"2")
        yield running


def _workflow(tmp_path: Path, server: FileServer) -> Workflow:
    params = base_params()
    params["checkpoint"] = model_param()
    listed = [{"folder": "loras", "name": "none.safetensors", "url": server.url("/listed.safetensors")}]
    workflow = {"template": "t.json", "parameters": dict.fromkeys(params), "models": listed}
    return load(write_manifests(tmp_path / "manifests", params=params, workflow=workflow)).workflow("w")


def _models(tmp_path: Path, allowlist: str = "127.0.0.1", cap: int | None = None) -> OnDemandModels:
    urls = ModelUrls.from_settings(Settings(_env_file=None, model_url_allowlist=allowlist))
    cache = ModelCache(tmp_path / "cache", cap, urls.download)
    return OnDemandModels(cache, urls, tmp_path / "models")


def test_url_and_listed_models_are_linked_where_the_graph_looks(server: FileServer, tmp_path: Path) -> None:
    workflow = _workflow(tmp_path, server)
    models = _models(tmp_path)
    value = {"url": server.url("/m.safetensors"), "sha256": SHA}
    seen: list[tuple[int, int | None]] = []
    with models.prepared(workflow, {"checkpoint": value}, lambda done, total: seen.append((done, total))):
        source = source_of(value)
        assert source is not None
        url_link = tmp_path / "models" / "checkpoints" / linked_name(source)
        listed_link = tmp_path / "models" / "loras" / "none.safetensors"
        assert url_link.read_bytes() == BODY and listed_link.read_bytes() == BODY + b"2"
        assert seen[-1] == (len(BODY) + 1, len(BODY) + 1)  # (the last file's bytes, as they came)
    # Another job: nothing downloaded again.
    with models.prepared(workflow, {"checkpoint": value}, lambda done, total: None):
        pass
    assert len(server.gets("/m.safetensors")) == 1 and len(server.gets("/listed.safetensors")) == 1


def test_look_tells_the_take_what_is_downloaded_here_and_what_is_lacking(
    server: FileServer, tmp_path: Path
) -> None:
    workflow = _workflow(tmp_path, server)
    models = _models(tmp_path)
    assert models.look([workflow]) == ModelsHere(frozenset(), frozenset({"none.safetensors"}))
    value = {"url": server.url("/m.safetensors")}
    with models.prepared(workflow, {"checkpoint": value}, lambda done, total: None):
        pass
    source = source_of(value)
    assert source is not None
    # Looked at again after the download, with the workflows looked at before.
    assert models.here == ModelsHere(frozenset({linked_name(source)}), frozenset())


def test_a_listed_model_the_operator_placed_is_used_as_it_is(server: FileServer, tmp_path: Path) -> None:
    workflow = _workflow(tmp_path, server)
    placed = tmp_path / "models" / "loras" / "none.safetensors"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"mine")
    with _models(tmp_path).prepared(workflow, {"checkpoint": "a.safetensors"}, lambda d, t: None):
        assert placed.read_bytes() == b"mine"
    assert server.gets("/listed.safetensors") == []


def test_a_url_this_worker_may_not_fetch_fails_naming_the_field(server: FileServer, tmp_path: Path) -> None:
    workflow = _workflow(tmp_path, server)
    models = _models(tmp_path, allowlist="huggingface.co")
    assert not models.fetchable(workflow.models[0])
    preparing = models.prepared(workflow, {"checkpoint": server.url("/m.safetensors")}, lambda d, t: None)
    with pytest.raises(ModelDownloadError, match=r"^params\.checkpoint: host 127\.0\.0\.1 is not in"):
        preparing.__enter__()
    assert server.seen == []


def test_a_wrong_sha256_fails_and_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    workflow = _workflow(tmp_path, server)
    value = {"url": server.url("/m.safetensors"), "sha256": "0" * 64}
    preparing = _models(tmp_path).prepared(workflow, {"checkpoint": value}, lambda d, t: None)
    with pytest.raises(ModelDownloadError, match=r"^params\.checkpoint: .*sha256"):
        preparing.__enter__()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
    assert not (tmp_path / "models" / "checkpoints" / "on-demand").exists()


def test_links_to_evicted_files_are_removed(server: FileServer, tmp_path: Path) -> None:
    workflow = _workflow(tmp_path, server)
    server.routes["/other.safetensors"] = Route(body=b"x" * len(BODY))
    models = _models(tmp_path, cap=len(BODY) * 2)  # room for two of the three files
    first = {"url": server.url("/m.safetensors")}
    with models.prepared(workflow, {"checkpoint": first}, lambda d, t: None):
        pass
    with models.prepared(
        workflow, {"checkpoint": {"url": server.url("/other.safetensors")}}, lambda d, t: None
    ):
        pass
    source = source_of(first)
    assert source is not None
    gone = tmp_path / "models" / "checkpoints" / linked_name(source)
    assert not gone.is_symlink()  # its file was the least recently used: evicted, and its link with it
