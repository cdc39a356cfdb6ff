"""The catalog in a real Redis: publish, activate (announced), list, names, and what pruning keeps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from comfyjobs import keys
from comfyjobs.catalog.bundle import Bundle, read_bundle
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.errors import CatalogError, NoActiveCatalogError
from tests.catalog.folders import copy_folders, edit_workflows
from tests.conftest import REPO


@pytest.fixture
def store(redis_client: redis.Redis) -> Iterator[CatalogStore]:
    yield CatalogStore(redis_client, f"test-{uuid.uuid4().hex[:8]}")


def _variant(tmp_path: Path, default_width: int) -> Bundle:
    manifests, workflows = copy_folders(tmp_path / str(default_width))

    def change(wfs: dict[str, dict[str, dict[str, dict[str, int]]]]) -> None:
        wfs["tiny"]["parameters"]["width"]["default"] = default_width

    edit_workflows(manifests, change)
    return read_bundle(manifests, workflows)[0]


def _publish(store: CatalogStore, bundle: Bundle, keep: int = 10) -> str:
    return store.publish(bundle, source="test", keep=keep, job_ttl_s=3600, workflows=["tiny"]).version


def test_publish_is_once_per_content_and_activate_is_announced(
    store: CatalogStore, redis_client: redis.Redis
) -> None:
    bundle, _ = read_bundle(REPO / "manifests", REPO / "workflows")
    first = store.publish(bundle, source="here", keep=10, job_ttl_s=3600, workflows=["tiny"])
    again = store.publish(bundle, source="there", keep=10, job_ttl_s=3600, workflows=["tiny"])
    assert first.new and not again.new and first.version == again.version == bundle.version
    with pytest.raises(NoActiveCatalogError):
        store.require_active()

    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.catalog_activated(store._queue))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    store.activate(bundle.version)
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == bundle.version.encode()
    assert store.active() == bundle.version
    assert store.bundle(bundle.version).to_bytes() == bundle.to_bytes()
    (listed,) = store.versions()
    assert listed.active and listed.source == "here" and listed.workflows == ["tiny"]


def test_versions_are_named_by_unique_prefix(store: CatalogStore, tmp_path: Path) -> None:
    a, b = _publish(store, _variant(tmp_path, 10)), _publish(store, _variant(tmp_path, 11))
    assert store.resolve(a[:8]) == a and store.resolve(b.upper()) == b
    store.activate(b)
    assert store.resolve("active") == b
    with pytest.raises(CatalogError, match="no published catalog version starts with"):
        store.resolve("0000" if not a.startswith("0000") and not b.startswith("0000") else "ffff")
    with pytest.raises(CatalogError, match="at least 4 hex digits"):
        store.resolve("ab")
    with pytest.raises(CatalogError, match="is not published"):
        store.activate("0" * 64)


def test_prune_keeps_the_newest_the_active_and_those_jobs_use(
    store: CatalogStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    versions = [_publish(store, _variant(tmp_path, width)) for width in (20, 21, 22, 23, 24)]
    oldest, used, *_ = versions
    store.activate(oldest)  # (an activation counts as recent: activate another, so it is old again)
    store.activate(versions[-1])
    redis_client.zadd(keys.catalog_jobs(store._queue, used), {"some-job": 4e9})  # a job that has not ended
    gone = store.prune(keep=2, job_ttl_s=3600)
    # Kept: the 2 most recently published or activated (24 and 20's activation), and the one in use.
    assert sorted(gone) == sorted([versions[2], versions[3]])
    assert {v.version for v in store.versions()} == {versions[-1], oldest, used}
    assert redis_client.exists(keys.catalog_bundle(store._queue, versions[2])) == 0
    with pytest.raises(CatalogError):
        store.bundle(versions[3])
    # Entries older than JOB_TTL_S are of expired records: they keep nothing.
    redis_client.zadd(keys.catalog_jobs(store._queue, used), {"some-job": 1.0})
    assert sorted(store.prune(keep=1, job_ttl_s=3600)) == sorted([oldest, used])
    assert [v.version for v in store.versions()] == [versions[-1]]
