"""Backpressure (MAX_QUEUE_DEPTH → 429) and Idempotency-Key, against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from tests.api.test_api import queued_task_ids

TINY = {"workflow_id": "tiny", "params": {"color": 1}}


@pytest.fixture
def small_queue(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_queue_depth": 2}))) as client:
        yield client


def test_a_full_queue_answers_429_and_ready_says_saturated(
    small_queue: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    first = small_queue.post("/generate", json=TINY)
    second = small_queue.post("/workflows/tiny", json={"color": 2})
    assert (first.status_code, second.status_code) == (202, 202)

    refused = small_queue.post("/generate", json=TINY)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "queue_full"
    assert "2 jobs waiting" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) > 0
    assert len(queued_task_ids(redis_client, settings)) == 2  # nothing of the refused one was queued
    ready = small_queue.get("/ready").json()
    assert ready["waiting"] == 2
    assert any(reason.startswith("saturated") for reason in ready["reasons"])

    # A cancelled job leaves the line, and there is room again.
    assert small_queue.delete(f"/tasks/{first.json()['task_id']}").status_code == 200
    assert small_queue.post("/generate", json=TINY).status_code == 202


def test_same_idempotency_key_and_body_give_the_same_task(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body = {"workflow_id": "txt2img", "params": {"prompt": "a fox"}}  # seed: random, drawn once

    first = client.post("/generate", json=body, headers=headers)
    again = client.post("/generate", json=body, headers=headers)

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()  # same task, same drawn seed
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert queued_task_ids(redis_client, settings) == [first.json()["task_id"]]  # sent once


def test_same_idempotency_key_with_another_body_is_a_conflict(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    first = client.post("/generate", json=TINY, headers=headers)
    assert first.status_code == 202

    other = client.post("/generate", json={"workflow_id": "tiny", "params": {"color": 2}}, headers=headers)

    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert len(queued_task_ids(redis_client, settings)) == 1
    # The typed route is the same request when it asks for the same workflow and parameters.
    typed = client.post("/workflows/tiny", json={"color": 1}, headers=headers)
    assert typed.status_code == 202
    assert typed.json()["task_id"] == first.json()["task_id"]
    assert client.post("/workflows/tiny", json={"color": 3}, headers=headers).status_code == 409
