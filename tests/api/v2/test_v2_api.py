"""The Comfy API v2 against a real Redis with no worker running: admission, validation against a worker's
published /object_info, policy, idempotency, assets and the job views, each response checked against the
vendored spec."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from blake3 import blake3
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr

from comfyjobs import keys
from comfyjobs.api.app import create_app
from comfyjobs.heartbeat import WorkerBeat
from comfyjobs.jobs.record import utc_now
from comfyjobs.settings import Settings
from tests.api.v2.spec import check_response, check_schema
from tests.media_files import png

OBJECT_INFO: dict[str, Any] = {
    "LoadImage": {
        "input": {"required": {"image": [["existing.png"], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "output_is_list": [False, False],
        "output_name": ["IMAGE", "MASK"],
        "name": "LoadImage",
        "output_node": False,
    },
    "ImageInvert": {
        "input": {"required": {"image": ["IMAGE"]}},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": "ImageInvert",
        "output_node": False,
    },
    "SaveImage": {
        "input": {
            "required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            "hidden": {"prompt": "PROMPT"},
        },
        "output": [],
        "output_is_list": [],
        "output_name": [],
        "name": "SaveImage",
        "output_node": True,
    },
}


def graph(image: Any = "existing.png") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v2"}},
    }


def checked(resp: Response) -> Any:
    body = resp.json() if resp.content else None
    check_response(resp.request.method, resp.request.url.path, resp.status_code, body)
    return body


@pytest.fixture
def worker(redis_client: redis.Redis) -> Iterator[str]:
    """A live worker's heartbeat naming its published object_info, as a worker writes them."""
    text = json.dumps(OBJECT_INFO, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    redis_client.set(keys.object_info(digest), text)
    now = utc_now()
    beat = WorkerBeat(
        worker_id="w-v2", device="cpu", pid=1, comfyui_ready=True, comfyui_pid=None, comfyui_restarts=0,
        started_at=now, seen_at=now, object_info=digest,
    )  # fmt: skip
    beat.expires_at = now.replace(year=now.year + 1)
    redis_client.hset(keys.WORKERS, "w-v2", beat.model_dump_json())
    yield digest
    redis_client.hdel(keys.WORKERS, "w-v2")


def test_a_graph_is_queued_and_read_back_as_the_spec_has_it(client: TestClient, worker: str) -> None:
    created = client.post("/api/v2/jobs", json={"workflow": graph()})
    job = checked(created)

    assert created.status_code == 201
    assert job["status"] == "queued" and job["queue_position"] == 0
    assert job["urls"] == {
        "self": f"/api/v2/jobs/{job['id']}",
        "events": f"/api/v2/jobs/{job['id']}/events",
        "cancel": f"/api/v2/jobs/{job['id']}/cancel",
    }
    assert checked(client.get(job["urls"]["self"]))["id"] == job["id"]
    assert checked(client.get(f"/api/v2/jobs/{job['id']}/workflow")) == {"workflow": graph(), "format": "api"}
    task = client.get(f"/tasks/{job['id']}").json()  # one job model: it is a task too
    assert task["status"] == "PENDING" and task["workflow_id"] == "(graph)"
    second = checked(client.post("/api/v2/jobs", json={"workflow": graph()}))
    assert second["queue_position"] == 1

    listed = client.get("/api/v2/jobs", params={"limit": 1}).json()
    assert [j["id"] for j in listed["jobs"]] == [second["id"]]  # newest first
    check_schema("Job", {k: v for k, v in listed["jobs"][0].items() if k != "create_time"})
    rest = client.get("/api/v2/jobs", params={"limit": 100, "cursor": listed["next_cursor"]}).json()
    assert job["id"] in [j["id"] for j in rest["jobs"]] and second["id"] not in [
        j["id"] for j in rest["jobs"]
    ]

    canceled = checked(client.post(job["urls"]["cancel"]))
    assert canceled["status"] == "canceled" and canceled["completed_at"] is not None
    assert checked(client.post(job["urls"]["cancel"]))["status"] == "canceled"  # idempotent
    assert [j["id"] for j in client.get("/api/v2/jobs", params={"status": "canceled"}).json()["jobs"]][
        :1
    ] == [job["id"]]


def test_a_graph_no_worker_can_run_is_refused_per_node(client: TestClient, worker: str) -> None:
    bad = graph()
    bad["2"] = {"class_type": "NoSuchNode", "inputs": {}}
    bad["3"]["inputs"].pop("filename_prefix")

    refused = client.post("/api/v2/jobs", json={"workflow": bad})
    error = checked(refused)["error"]

    assert refused.status_code == 422
    assert error["code"] == "invalid_workflow"
    node_errors = error["details"]["node_errors"]
    assert [p["reason"] for p in node_errors["2"]] == ["unknown_class_type"]
    assert {"field": "filename_prefix", "reason": "missing_input"}.items() <= node_errors["3"][0].items()


def test_ui_format_and_reserved_fields_are_refused(client: TestClient, worker: str) -> None:
    ui = {"last_node_id": 3, "last_link_id": 1, "nodes": [{"id": 1, "type": "LoadImage"}], "links": []}
    refused = client.post("/api/v2/jobs", json={"workflow": ui})
    assert (refused.status_code, checked(refused)["error"]["code"]) == (422, "workflow_format_ui")
    reserved = client.post("/api/v2/jobs", json={"workflow": graph(), "webhook_url": "https://x.example/"})
    assert reserved.status_code == 422


def test_an_idempotency_key_is_single_use(client: TestClient, worker: str) -> None:
    headers = {"Idempotency-Key": "k-one"}
    assert client.post("/api/v2/jobs", json={"workflow": graph()}, headers=headers).status_code == 201
    again = client.post("/api/v2/jobs", json={"workflow": graph()}, headers=headers)
    assert (again.status_code, checked(again)["error"]["code"]) == (422, "idempotency_key_reuse")


def test_the_node_policy_refuses_by_class_name(settings: Settings, worker: str) -> None:
    for update, code, status in (
        ({"raw_workflow_node_denylist": "ImageInvert"}, "invalid_workflow", 422),
        ({"raw_workflow_node_allowlist": "LoadImage,SaveImage"}, "invalid_workflow", 422),
        ({"raw_workflows": False}, "forbidden", 403),
    ):
        with TestClient(create_app(settings.model_copy(update=update))) as client:
            refused = client.post("/api/v2/jobs", json={"workflow": graph()})
            error = checked(refused)["error"]
            assert (refused.status_code, error["code"]) == (status, code)
            if status == 422:
                assert [p["reason"] for p in error["details"]["node_errors"]["2"]] == [
                    "class_type_not_allowed"
                ]


def test_assets_dedup_by_blake3_and_feed_a_graph(client: TestClient, worker: str) -> None:
    data = png(16, 16, "orange")
    digest = f"blake3:{blake3(data).hexdigest()}"
    assert client.head(f"/api/v2/assets/by-hash/{digest}").status_code == 404
    form = {"content_type": "image/png", "file_path": "mine.png", "expected_hash": digest}
    files = {"file": ("mine.png", data, "image/png")}

    first = client.post("/api/v2/assets", data=form, files=files)
    asset = checked(first)
    assert first.status_code == 201 and asset["hash"] == digest and asset["created_new"] is True
    assert client.head(f"/api/v2/assets/by-hash/{digest}").status_code == 200
    again = client.post("/api/v2/assets", data=form, files=files)
    assert (again.status_code, checked(again)["id"]) == (200, asset["id"])
    minted = client.post("/api/v2/assets/from-hash", json={"hash": digest, "file_path": "mine.png"})
    assert checked(minted)["id"] == asset["id"]
    wrong = client.post("/api/v2/assets", data={**form, "expected_hash": "blake3:" + "0" * 64}, files=files)
    assert (wrong.status_code, checked(wrong)["error"]["code"]) == (409, "hash_mismatch")
    assert checked(client.get(f"/api/v2/assets/{asset['id']}"))["file_path"] == "mine.png"
    content = client.get(f"/api/v2/assets/{asset['id']}/content")
    assert content.content == data
    part = client.get(f"/api/v2/assets/{asset['id']}/content", headers={"Range": "bytes=0-7"})
    assert (part.status_code, part.content) == (206, data[:8])

    # By core/ASSET reference, and by the file name it was uploaded under (a LoadImage upload input).
    ref = {"__type": "core/ASSET", "info": {"id": asset["id"], "hash": digest, "file_path": "mine.png"}}
    for image in (ref, "mine.png"):
        job = checked(client.post("/api/v2/jobs", json={"workflow": graph(image)}))
        task = client.get(f"/tasks/{job['id']}").json()
        assert task["status"] == "PENDING"
    missing = client.post(
        "/api/v2/jobs", json={"workflow": graph({"__type": "core/ASSET", "info": {"id": "x"}})}
    )
    assert (missing.status_code, checked(missing)["error"]["code"]) == (422, "missing_asset")

    assert checked(client.delete(f"/api/v2/assets/{asset['id']}")) is None
    gone = client.delete(f"/api/v2/assets/{asset['id']}")
    assert (gone.status_code, checked(gone)["error"]["code"]) == (404, "not_found")


def test_unknown_jobs_answer_not_found(client: TestClient) -> None:
    for resp in (client.get("/api/v2/jobs/nope"), client.post("/api/v2/jobs/nope/cancel")):
        assert (resp.status_code, checked(resp)["error"]["code"]) == (404, "not_found")


def test_keys_and_tenants_hold_on_v2(settings: Settings, worker: str) -> None:
    stranger = f"t{uuid.uuid4().hex[:12]}"  # a tenant with no jobs in this Redis yet
    keyed = settings.model_copy(update={"api_keys": SecretStr(f"alice:k-alice,{stranger}:k-bob")})
    with TestClient(create_app(keyed)) as client:
        refused = client.get("/api/v2/jobs/anything")
        assert (refused.status_code, checked(refused)["error"]["code"]) == (401, "unauthorized")
        alice = {"Authorization": "Bearer k-alice"}
        job = checked(client.post("/api/v2/jobs", json={"workflow": graph()}, headers=alice))
        assert client.get(job["urls"]["self"], headers=alice).status_code == 200
        other = client.get(job["urls"]["self"], headers={"Authorization": "Bearer k-bob"})
        assert (other.status_code, checked(other)["error"]["code"]) == (404, "not_found")
        assert client.get("/api/v2/jobs", headers={"Authorization": "Bearer k-bob"}).json()["jobs"] == []
