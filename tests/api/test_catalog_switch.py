"""The API follows the active catalog version: switched without a restart or a failed request, typed
routes and /docs included, each job recording the version it was validated against."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi.testclient import TestClient

from comfyjobs.catalog.bundle import read_bundle
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.settings import Settings
from tests.api.conftest import LiveApi
from tests.catalog.folders import copy_folders, edit_workflows, swap_tiny_size
from tests.support import wait_for


def _publish(store: CatalogStore, manifests: Path, workflows: Path) -> str:
    bundle, registry = read_bundle(manifests, workflows)
    return store.publish(
        bundle, source="test", keep=10, job_ttl_s=3600, workflows=list(registry.workflows)
    ).version


def _second_version(store: CatalogStore, tmp_path: Path) -> str:
    """tiny's size parameters swapped, width at most 100, and a new workflow tiny2."""
    manifests, workflows = copy_folders(tmp_path)

    def change(wfs: dict[str, Any]) -> None:
        swap_tiny_size(wfs)
        wfs["tiny"]["parameters"]["width"]["max"] = 100
        wfs["tiny2"] = {"template": "tiny.json", "parameters": {"color": None}}

    edit_workflows(manifests, change)
    return _publish(store, manifests, workflows)


def _serving(client: TestClient | httpx.Client, version: str) -> bool:
    return bool(client.get("/workflows").headers["Catalog-Version"] == version)


def test_an_activated_version_is_served_without_a_restart(
    client: TestClient, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = CatalogStore(redis_client, settings.queue_name)
    first = client.get("/workflows")
    a = first.headers["Catalog-Version"]
    assert a == store.active() and {w["catalog_version"] for w in first.json()} == {a}
    before = client.post("/generate", json={"workflow_id": "tiny", "params": {"width": 150}}).json()
    assert before["catalog_version"] == a
    assert client.post("/workflows/tiny2", json={}).json()["error"]["code"] == "workflow_not_found"

    b = _second_version(store, tmp_path)
    store.activate(b)
    wait_for(lambda: _serving(client, b), timeout_s=10, what="the API to serve version b")
    assert "/workflows/tiny2" in client.get("/openapi.json").json()["paths"]  # typed route, in /docs
    made = client.post("/workflows/tiny2", json={"color": 7})
    assert made.status_code == 202, made.text
    task = client.get(f"/tasks/{made.json()['task_id']}").json()
    assert task["catalog_version"] == b and task["params"]["color"] == 7
    refused = client.post("/generate", json={"workflow_id": "tiny", "params": {"width": 150}})
    assert refused.status_code == 422  # b's bound
    assert client.get(f"/tasks/{before['task_id']}").json()["catalog_version"] == a  # its own version

    store.activate(a)  # a rollback
    wait_for(lambda: _serving(client, a), timeout_s=10, what="the API to serve version a again")
    assert "/workflows/tiny2" not in client.get("/openapi.json").json()["paths"]
    assert client.post("/workflows/tiny2", json={}).status_code == 404


def test_requests_in_flight_while_versions_switch_all_get_an_answer_of_their_version(
    live_api: LiveApi, redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = CatalogStore(redis_client, live_api.settings.queue_name)
    a = store.require_active()
    b = _second_version(store, tmp_path)
    answers: Counter[tuple[str, int, str | None]] = Counter()
    done = threading.Event()

    def load(path: str) -> None:
        with httpx.Client(base_url=live_api.url, timeout=30) as http:
            while not done.is_set():
                if path == "/generate":  # width 150: valid in a, over b's max
                    resp = http.post(path, json={"workflow_id": "tiny", "params": {"width": 150}})
                    version = resp.json().get("catalog_version") if resp.status_code == 202 else None
                else:
                    resp = http.get(path)
                    version = resp.headers.get("Catalog-Version")
                answers[(path, resp.status_code, version)] += 1

    threads = [threading.Thread(target=load, args=(p,)) for p in ("/generate", "/generate", "/workflows")]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=live_api.url, timeout=30) as http:
            for version in (b, a) * 3:
                store.activate(version)
                wait_for(lambda v=version: _serving(http, v), timeout_s=10, what="the switch")  # type: ignore[misc]
    finally:
        done.set()
        for thread in threads:
            thread.join()
    statuses = {(path, status) for path, status, _ in answers}
    assert statuses <= {("/generate", 202), ("/generate", 422), ("/workflows", 200)}, answers
    assert {v for (path, status, v) in answers if path == "/generate" and status == 202} == {a}
    assert {v for (path, _, v) in answers if path == "/workflows"} == {a, b}
    assert answers[("/generate", 422, None)] > 0 and sum(answers.values()) > 20
