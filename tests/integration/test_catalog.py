"""Jobs run as the catalog version they were validated against says, whatever the worker's own files
hold: the session's worker has the shipped manifests, the versions published here move tiny's size
parameters to each other's input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from comfyjobs.catalog.bundle import read_bundle
from comfyjobs.catalog.store import CatalogStore
from tests.catalog.folders import copy_folders, edit_workflows, swap_tiny_size
from tests.integration.conftest import Service
from tests.integration.test_service import JOB_TIMEOUT_S, image, submit
from tests.support import JobEvents, wait_for


@pytest.fixture
def catalog(service: Service, api: httpx.Client) -> Iterator[CatalogStore]:
    """The service's catalog; whatever a test activates, the version active before is active after."""
    client = redis.Redis.from_url(service.redis_url)
    store = CatalogStore(client, "comfyjobs")
    before = store.require_active()
    try:
        yield store
    finally:
        store.activate(before)
        wait_for(lambda: serving(api, before), timeout_s=10, what="the API to serve the shipped catalog")
        client.close()


def serving(api: httpx.Client, version: str) -> bool:
    return bool(api.get("/workflows").headers["Catalog-Version"] == version)


def publish_swapped(store: CatalogStore, where: Path) -> str:
    manifests, workflows = copy_folders(where)
    edit_workflows(manifests, swap_tiny_size)
    bundle, registry = read_bundle(manifests, workflows)
    return store.publish(
        bundle, source="test", keep=10, job_ttl_s=3600, workflows=list(registry.workflows)
    ).version


def size_of(api: httpx.Client, events: JobEvents, task_id: str) -> tuple[int, int]:
    assert events.wait_terminal(task_id, JOB_TIMEOUT_S) == "SUCCESS", api.get(f"/tasks/{task_id}").json()
    (output,) = api.get(f"/tasks/{task_id}").json()["outputs"]
    return image(api, output).size


def test_a_job_runs_as_its_published_version_not_as_the_workers_files(
    api: httpx.Client, events: JobEvents, catalog: CatalogStore, tmp_path: Path
) -> None:
    swapped = publish_swapped(catalog, tmp_path)
    catalog.activate(swapped)
    wait_for(lambda: serving(api, swapped), timeout_s=10, what="the API to serve the published version")
    task_id = submit(api, "tiny", width=40, height=24, color=101)
    assert api.get(f"/tasks/{task_id}").json()["catalog_version"] == swapped
    assert size_of(api, events, task_id) == (24, 40)  # the worker's own files would make it 40 x 24


def test_jobs_waiting_across_a_publish_each_run_as_their_own_version(
    api: httpx.Client, events: JobEvents, catalog: CatalogStore, tmp_path: Path
) -> None:
    shipped = catalog.require_active()
    # Both of the worker's job threads busy with a slower job each, so what follows waits in line.
    busy = [submit(api, "txt2img", prompt="busy", steps=12, width=256, height=256, seed=s) for s in (1, 2)]
    first = [submit(api, "tiny", width=40, height=24, color=c) for c in (102, 103)]
    swapped = publish_swapped(catalog, tmp_path)
    catalog.activate(swapped)
    wait_for(lambda: serving(api, swapped), timeout_s=10, what="the API to serve the new version")
    assert {api.get(f"/tasks/{t}").json()["status"] for t in first} == {"PENDING"}  # still waiting
    second = [submit(api, "tiny", width=40, height=24, color=c) for c in (104, 105)]
    assert [size_of(api, events, t) for t in first] == [(40, 24), (40, 24)]
    assert [size_of(api, events, t) for t in second] == [(24, 40), (24, 40)]
    assert {api.get(f"/tasks/{t}").json()["catalog_version"] for t in first} == {shipped}
    for task_id in busy:
        events.wait_terminal(task_id, JOB_TIMEOUT_S)
