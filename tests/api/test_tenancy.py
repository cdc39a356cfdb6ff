"""Tenants see, download, cancel and replay only their own tasks and assets; admins see every tenant's."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from comfyjobs.tenancy import DEFAULT_TENANT, Principal, parse_keys
from tests.media_files import png

ALICE = {"X-API-Key": "k-alice"}
BOB = {"Authorization": "Bearer k-bob"}
OPS = {"X-API-Key": "k-ops"}
BARE = {"X-API-Key": "k-bare"}


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    tenanted = settings.model_copy(
        update={
            "api_keys": SecretStr("alice:k-alice, bob:k-bob, k-bare"),
            "admin_api_keys": SecretStr("ops:k-ops"),
        }
    )
    with TestClient(create_app(tenanted)) as client:
        yield client


def _local(url: str) -> str:
    split = urlsplit(url)
    return f"{split.path}?{split.query}"


def test_keys_name_their_tenants() -> None:
    keys = parse_keys("alice:k-alice, bob:k-bob,k-bare,", admin=False, setting="API_KEYS")
    assert keys == {
        "k-alice": Principal("alice"),
        "k-bob": Principal("bob"),
        "k-bare": Principal(DEFAULT_TENANT),
    }
    assert parse_keys("ops:k-ops", admin=True, setting="ADMIN_API_KEYS")["k-ops"].admin
    with pytest.raises(ValueError, match="API_KEYS: entry 1 names tenant 'bad name'"):
        parse_keys("bad name:k", admin=False, setting="API_KEYS")
    with pytest.raises(ValueError, match="entry 1 \\(tenant alice\\) has no key"):
        parse_keys("alice:", admin=False, setting="API_KEYS")
    with pytest.raises(ValueError, match="entry 2 repeats a key"):
        parse_keys("a:k, b:k", admin=False, setting="API_KEYS")


def test_tasks_are_their_tenants_own(api: TestClient) -> None:
    made = api.post("/generate", json={"workflow_id": "tiny", "params": {}}, headers=ALICE)
    assert made.status_code == 202
    task_id = made.json()["task_id"]
    mine = api.get(f"/tasks/{task_id}", headers=ALICE)
    assert mine.status_code == 200 and mine.json()["tenant"] == "alice"

    unknown = api.get("/tasks/0123456789abcdef", headers=BOB).json()
    for method, path in [
        ("GET", f"/tasks/{task_id}"),
        ("GET", f"/tasks/{task_id}?wait=0"),
        ("GET", f"/tasks/{task_id}/events"),
        ("DELETE", f"/tasks/{task_id}"),
        ("DELETE", f"/tasks/{task_id}/outputs"),
    ]:
        resp = api.request(method, path, headers=BOB)
        assert resp.status_code == 404, (method, path)
        body = resp.json()["error"]
        assert body["code"] == unknown["error"]["code"] == "task_not_found"
        assert body["message"] == unknown["error"]["message"].replace("0123456789abcdef", task_id)

    assert api.get(f"/tasks/{task_id}", headers=OPS).status_code == 200  # admins see every tenant
    assert api.get(f"/tasks/{task_id}", headers=BARE).status_code == 404  # a bare key: tenant "default"
    assert api.delete(f"/tasks/{task_id}", headers=ALICE).json()["status"] == "CANCELLED"


def test_idempotency_keys_are_per_tenant(api: TestClient) -> None:
    body = {"workflow_id": "tiny", "params": {"color": 5}}
    key = {"Idempotency-Key": "same-key"}
    first = api.post("/generate", json=body, headers={**ALICE, **key})
    other = api.post("/generate", json=body, headers={**BOB, **key})
    again = api.post("/generate", json=body, headers={**ALICE, **key})
    assert first.status_code == other.status_code == again.status_code == 202
    assert other.json()["task_id"] != first.json()["task_id"]
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true"


def test_assets_are_their_tenants_own(api: TestClient) -> None:
    data = png(32, 32, "purple")
    alice = api.post("/assets", files={"file": ("a.png", data, "image/png")}, headers=ALICE).json()
    assert api.get(f"/assets/{alice['id']}", headers=BOB).status_code == 404
    refused = api.post(
        "/generate",
        json={"workflow_id": "upscale", "params": {"image": alice["id"]}},
        headers=BOB,
    )
    assert refused.status_code == 422
    assert "no asset" in refused.json()["error"]["fields"][0]["reason"]

    bob = api.post("/assets", files={"file": ("b.png", data, "image/png")}, headers=BOB).json()
    assert bob["id"] == alice["id"]  # the same bytes, but bob's own asset
    assert api.delete(f"/assets/{bob['id']}", headers=BOB).status_code == 204
    still = api.get(f"/assets/{alice['id']}", headers=ALICE)
    assert still.status_code == 200
    assert api.get(_local(still.json()["url"])).content == data  # deleting bob's left alice's file


def test_admins_see_and_delete_any_tenants_assets(api: TestClient) -> None:
    data = png(24, 24, "teal")
    alice = api.post("/assets", files={"file": ("a.png", data, "image/png")}, headers=ALICE).json()
    assert alice["tenant"] == "alice"

    seen = api.get(f"/assets/{alice['id']}", headers=OPS)
    assert seen.status_code == 200
    assert seen.json()["tenant"] == "alice"
    assert api.get(_local(seen.json()["url"])).content == data
    # The admin's own copy of the same bytes comes first.
    own = api.post("/assets", files={"file": ("o.png", data, "image/png")}, headers=OPS).json()
    assert api.get(f"/assets/{own['id']}", headers=OPS).json()["tenant"] == "ops"
    assert api.delete(f"/assets/{own['id']}", headers=OPS).status_code == 204
    assert api.get(f"/assets/{own['id']}", headers=OPS).json()["tenant"] == "alice"

    assert api.delete(f"/assets/{alice['id']}", headers=OPS).status_code == 204
    assert api.get(f"/assets/{alice['id']}", headers=ALICE).status_code == 404
    assert api.get(f"/assets/{alice['id']}", headers=OPS).status_code == 404
    assert api.get(f"/assets/{'0' * 64}", headers=OPS).status_code == 404
