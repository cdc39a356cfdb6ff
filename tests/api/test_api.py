from __future__ import annotations

import json

import redis
from fastapi.testclient import TestClient

from comfyjobs import keys
from comfyjobs.jobs.delivery import TAKE_JOB_TASK
from comfyjobs.settings import Settings


def queued_task_ids(redis_client: redis.Redis, settings: Settings) -> list[str]:
    """The jobs in line, in the order they came; each has its ticket in Celery's list."""
    waiting = [t.decode() for t in redis_client.zrange(keys.queue_waiting(settings.queue_name), 0, -1)]
    tickets = [json.loads(m) for m in redis_client.lrange(settings.queue_name, 0, -1)]
    assert len(tickets) == len(waiting)
    assert all(t["headers"]["task"] == TAKE_JOB_TASK for t in tickets)
    return waiting


def job_keys(redis_client: redis.Redis) -> set[bytes]:
    return set(redis_client.scan_iter(match=keys.job("*")))


def test_generate_records_and_enqueues(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    resp = client.post(
        "/generate", json={"workflow_id": "txt2img", "params": {"prompt": "a fox", "steps": 3}}
    )

    assert resp.status_code == 202, resp.text
    body = resp.json()
    task_id = body["task_id"]
    assert body["status"] == "PENDING"
    assert body["status_url"] == f"http://api.example:9000/tasks/{task_id}"
    assert resp.headers["location"] == body["status_url"]
    assert isinstance(body["params"]["seed"], int)  # `random` resolved by the server
    assert body["params"]["steps"] == 3
    assert body["params"]["lora"] is None
    message = json.loads(redis_client.lrange(settings.queue_name, 0, -1)[0])
    assert message["headers"]["task"] == TAKE_JOB_TASK
    assert queued_task_ids(redis_client, settings) == [task_id]

    task = client.get(f"/tasks/{task_id}").json()
    assert task["status"] == "PENDING"
    assert task["params"] == body["params"]
    assert task["outputs"] == [] and task["error"] is None
    assert 0 < redis_client.ttl(keys.job(task_id)) <= settings.job_ttl_s


def test_typed_workflow_route_uses_the_same_path(
    client: TestClient, settings: Settings, redis_client: redis.Redis
) -> None:
    resp = client.post("/workflows/tiny", json={"width": 32, "color": 255})

    assert resp.status_code == 202, resp.text
    assert resp.json()["params"] == {"width": 32, "height": 64, "batch_size": 1, "color": 255}
    assert queued_task_ids(redis_client, settings) == [resp.json()["task_id"]]


def test_invalid_params_are_refused_and_nothing_is_enqueued(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    before = job_keys(redis_client)
    resp = client.post(
        "/generate",
        json={
            "workflow_id": "txt2img",
            "params": {"steps": 0, "sampler": "nope", "enable_magic": True, "cfg": "nan", "width": True},
        },
    )

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "invalid_params"
    reasons = {f["field"]: f["reason"] for f in error["fields"]}
    assert set(reasons) == {
        "params.prompt",
        "params.steps",
        "params.sampler",
        "params.enable_magic",
        "params.cfg",
        "params.width",
    }
    assert reasons["params.enable_magic"] == "unknown parameter"
    assert reasons["params.prompt"] == "Field required"
    assert "greater than or equal to 1" in reasons["params.steps"]
    assert "'euler'" in reasons["params.sampler"]
    assert reasons["params.cfg"] == "must be a finite number"
    assert reasons["params.width"] == "must be a number, not a boolean"
    assert job_keys(redis_client) == before
    assert queued_task_ids(redis_client, settings) == []


def test_typed_route_refuses_invalid_params_by_field(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    resp = client.post("/workflows/tiny", json={"width": 0, "colour": 3})

    assert resp.status_code == 422
    fields = {f["field"]: f["reason"] for f in resp.json()["error"]["fields"]}
    assert set(fields) == {"params.width", "params.colour"}  # named as in POST /generate
    assert fields["params.colour"] == "unknown parameter"
    assert queued_task_ids(redis_client, settings) == []


def test_missing_model_file_is_refused(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    resp = client.post(
        "/generate",
        json={"workflow_id": "txt2img", "params": {"prompt": "x", "checkpoint": "sdxl.safetensors"}},
    )

    assert resp.status_code == 422
    (field,) = resp.json()["error"]["fields"]
    assert field["field"] == "params.checkpoint"
    assert "not in the checkpoints folder" in field["reason"]
    assert "smoke-sd15.safetensors" in field["reason"]  # says what is available
    assert queued_task_ids(redis_client, settings) == []


def test_explicit_seed_is_kept(client: TestClient) -> None:
    resp = client.post("/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x", "seed": 7}})
    assert resp.json()["params"]["seed"] == 7


def test_unknown_workflow_and_task_are_404(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    resp = client.post("/generate", json={"workflow_id": "nope", "params": {}})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "workflow_not_found"
    assert "txt2img" in resp.json()["error"]["message"]
    assert queued_task_ids(redis_client, settings) == []

    resp = client.get("/tasks/0123456789abcdef")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "task_not_found"


def test_workflows_and_loras_are_listed(client: TestClient) -> None:
    workflows = {w["id"]: w for w in client.get("/workflows").json()}
    shipped = {"txt2img", "tiny", "img2img", "inpaint", "upscale", "upscale-model", "tiny-media"}
    assert set(workflows) == shipped
    params = {p["name"]: p for p in workflows["txt2img"]["parameters"]}
    assert params["prompt"]["required"] is True
    assert params["steps"] == {
        "name": "steps", "type": "integer", "description": "Sampling steps.", "required": False,
        "default": 20, "min": 1, "max": 150,
    }  # fmt: skip
    assert params["checkpoint"]["choices"] == ["smoke-sd15.safetensors"]  # the folder as installed

    detail = client.get("/workflows/tiny").json()
    assert detail["request_schema"]["additionalProperties"] is False
    assert client.get("/workflows/nope").status_code == 404

    loras = client.get("/loras").json()
    assert loras[0]["name"] == "example-pixel-art.safetensors"
    assert loras[0]["installed"] is False
    assert loras[0]["prompt_prefix"] == "pixel art,"


def test_openapi_documents_each_workflow(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/workflows/txt2img" in schema["paths"]
    models = schema["components"]["schemas"]
    txt2img = models["Txt2imgParams"]["properties"]
    assert txt2img["steps"]["maximum"] == 150
    assert txt2img["sampler"]["default"] == "euler"
    assert "euler_ancestral" in txt2img["sampler"]["enum"]


def test_health_and_ready_without_workers(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    resp = client.get("/ready")
    assert resp.status_code == 503
    assert resp.json()["reasons"] == ["no worker is running"]


def test_output_paths_cannot_escape(client: TestClient) -> None:
    assert client.get("/outputs/abc/..%2F..%2Fetc%2Fpasswd").status_code == 404
    unsigned = client.get("/outputs/abc/missing.png")
    assert unsigned.status_code == 403
    assert unsigned.json()["error"]["code"] == "url_signature_invalid"


def test_malformed_requests_get_the_error_shape(client: TestClient) -> None:
    resp = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    (field,) = resp.json()["error"]["fields"]
    assert field["field"] == "body" and field["reason"].startswith("not valid JSON")

    resp = client.post("/generate", json={"workflow_id": "tiny", "parameters": {}})
    fields = {f["field"]: f["reason"] for f in resp.json()["error"]["fields"]}
    assert fields == {"parameters": "unknown field"}

    resp = client.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.json() == {"error": {"code": "not_found", "message": "Not Found"}}
