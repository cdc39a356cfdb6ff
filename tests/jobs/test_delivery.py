"""The tickets the API writes itself are what Celery's own send_task would have sent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from comfyjobs.jobs.delivery import TAKE_JOB_TASK, JobMessages, make_celery
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings
from tests.conftest import REPO

# Differ between any two messages, whoever sends them: a fresh tag per message, and the sender's identity.
PER_MESSAGE = {("properties", "delivery_tag"), ("properties", "reply_to"), ("headers", "origin")}


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    return {
        part: {k: v for k, v in value.items() if (part, k) not in PER_MESSAGE}
        if isinstance(value, dict)
        else value
        for part, value in message.items()
    }


def test_a_ticket_is_what_send_task_pushes(redis_url: str, redis_client: redis.Redis) -> None:
    queue = f"delivery-{uuid.uuid4().hex[:8]}"
    settings = Settings.load(redis_url=redis_url, queue_name=queue)
    app = make_celery(settings, load_registry(REPO / "manifests", REPO / "workflows"))
    task_id = uuid.uuid4().hex

    app.send_task(TAKE_JOB_TASK, task_id=task_id, queue=queue)
    (sent,) = [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]
    messages = JobMessages(app, queue)
    ours = json.loads(messages.message(task_id))

    assert messages.list_key == queue
    assert _comparable(ours) == _comparable(sent)
    assert ours["headers"]["id"] == task_id and ours["headers"]["task"] == TAKE_JOB_TASK
    tickets = {json.loads(messages.ticket())["headers"]["id"] for _ in range(3)}
    assert len(tickets) == 3 and all(t.startswith("ticket-") for t in tickets)
    assert (
        json.loads(messages.message(task_id))["properties"]["delivery_tag"]
        != ours["properties"]["delivery_tag"]
    )
    redis_client.delete(queue)


def test_a_task_id_that_would_break_the_message_is_refused(redis_url: str) -> None:
    settings = Settings.load(redis_url=redis_url, queue_name="q")
    messages = JobMessages(make_celery(settings, load_registry(REPO / "manifests", REPO / "workflows")), "q")

    with pytest.raises(ValueError, match="task ids"):
        messages.message('x", "task": "other')
