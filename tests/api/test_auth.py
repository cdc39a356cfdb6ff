from __future__ import annotations

from fastapi.testclient import TestClient


def test_keys_are_required_when_configured(keyed: TestClient) -> None:
    missing = keyed.get("/workflows")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = keyed.get("/workflows", headers={"Authorization": "Bearer k-three"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["error"]["message"]

    assert keyed.get("/workflows", headers={"Authorization": "Bearer k-two"}).status_code == 200
    assert keyed.get("/loras", headers={"X-API-Key": "k-one"}).status_code == 200
    queued = keyed.post(
        "/generate", json={"workflow_id": "tiny", "params": {}}, headers={"X-API-Key": "k-one"}
    )
    assert queued.status_code == 202
    task_id = queued.json()["task_id"]
    assert keyed.get(f"/tasks/{task_id}").status_code == 401
    assert keyed.get(f"/tasks/{task_id}", headers={"X-API-Key": "k-one"}).status_code == 200
    # Output and asset links carry their own credential (a signature), like presigned S3 URLs.
    assert keyed.get(f"/outputs/{task_id}/x.png").status_code == 403
    assert keyed.get("/assets/" + "0" * 64).status_code == 401


def test_health_and_docs_stay_open(keyed: TestClient) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 503  # answers (no worker here) rather than 401
    assert keyed.get("/openapi.json").status_code == 200


def test_no_keys_configured_means_open(client: TestClient) -> None:
    assert client.get("/workflows").status_code == 200
