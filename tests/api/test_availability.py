"""The API's view of what workers can run, read from their heartbeat keys (the contract workers write)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from comfyjobs import keys
from comfyjobs.api.availability import FleetView
from comfyjobs.comfy.doctor import WorkflowAvailability
from comfyjobs.heartbeat import Heartbeat, WorkerBeat
from comfyjobs.jobs.record import utc_now
from comfyjobs.settings import Settings


@pytest.fixture
def beats(redis_client: redis.Redis) -> Iterator[list[str]]:
    written: list[str] = []
    yield written
    for worker_id in written:
        redis_client.hdel(keys.WORKERS, worker_id)


def write_beat(
    redis_client: redis.Redis, beats: list[str], worker_id: str, **workflows: WorkflowAvailability
) -> None:
    beat = WorkerBeat(
        worker_id=worker_id, device="gpu0", pid=1, comfyui_ready=True, comfyui_pid=2, comfyui_restarts=0,
        started_at=utc_now(), seen_at=utc_now(), workflows=workflows,
        expires_at=utc_now() + timedelta(seconds=60),
    )  # fmt: skip
    redis_client.hset(keys.WORKERS, worker_id, beat.model_dump_json())
    beats.append(worker_id)


MISSING = WorkflowAvailability(ready=False, missing_models=["checkpoints/sdxl.safetensors"])


def test_a_workflow_no_worker_can_run_is_refused_with_409(
    client: TestClient, redis_client: redis.Redis, settings: Settings, beats: list[str]
) -> None:
    write_beat(redis_client, beats, "w1", tiny=WorkflowAvailability(ready=True), txt2img=MISSING)

    resp = client.post("/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x"}})

    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["code"] == "workflow_unavailable"
    assert error["missing_models"] == ["checkpoints/sdxl.safetensors"]
    assert "checkpoints/sdxl.safetensors" in error["message"]
    assert redis_client.llen(settings.queue_name) == 0
    assert client.post("/workflows/tiny", json={}).status_code == 202


def test_one_ready_worker_is_enough(client: TestClient, redis_client: redis.Redis, beats: list[str]) -> None:
    write_beat(redis_client, beats, "w1", txt2img=MISSING)
    write_beat(redis_client, beats, "w2", txt2img=WorkflowAvailability(ready=True))

    assert (
        client.post("/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x"}}).status_code
        == 202
    )
    listed = {w["id"]: w["availability"] for w in client.get("/workflows").json()}
    assert listed["txt2img"] == {
        "ready": True, "workers_ready": 1, "workers_checked": 2,
        "missing_nodes": [], "missing_models": [], "problems": [],
    }  # fmt: skip
    assert listed["tiny"] is None  # no worker has checked it


def test_unknown_availability_does_not_block(client: TestClient) -> None:
    assert client.get("/workflows/tiny").json()["availability"] is None
    assert client.post("/workflows/tiny", json={}).status_code == 202


def test_the_fleet_view_reads_redis_at_most_once_per_max_age(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.delete(keys.WORKERS)

    async def views() -> tuple[list[str], list[str], list[str]]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            held, fresh = FleetView(client, max_age_s=3600), FleetView(client, max_age_s=0)
            assert await held.beats() == [] and await fresh.beats() == []
            Heartbeat(redis_client, interval_s=5, make_beat=lambda: _beat("w-new")).beat()
            names = [b.worker_id for b in await held.beats()], [b.worker_id for b in await fresh.beats()]
            return *names, [b.worker_id for b in await FleetView(client).beats()]
        finally:
            await client.aclose()

    held, fresh, new_view = asyncio.run(views())
    assert held == []  # read within its max age: the view it had
    assert fresh == ["w-new"] and new_view == ["w-new"]
    redis_client.delete(keys.WORKERS)


def _beat(worker_id: str) -> WorkerBeat:
    now = utc_now()
    return WorkerBeat(
        worker_id=worker_id, device="cpu", pid=1, comfyui_ready=True, comfyui_pid=None, comfyui_restarts=0,
        started_at=now, seen_at=now,
    )  # fmt: skip
