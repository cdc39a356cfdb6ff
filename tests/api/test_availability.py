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
from comfyjobs.api.availability import FleetView, blocked_reason
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.comfy.doctor import WorkflowAvailability
from comfyjobs.heartbeat import Heartbeat, WorkerBeat
from comfyjobs.jobs.record import JobRecord, utc_now
from comfyjobs.settings import Settings


@pytest.fixture
def beats(redis_client: redis.Redis) -> Iterator[list[str]]:
    written: list[str] = []
    yield written
    for worker_id in written:
        redis_client.hdel(keys.WORKERS, worker_id)


def write_beat(
    redis_client: redis.Redis,
    beats: list[str],
    worker_id: str,
    runs: list[str] | None = None,
    cannot: dict[str, str] | None = None,
    queue: str | None = None,
    **workflows: WorkflowAvailability,
) -> None:
    beat = WorkerBeat(
        worker_id=worker_id, device="gpu0", pid=1, comfyui_ready=True, comfyui_pid=2, comfyui_restarts=0,
        started_at=utc_now(), seen_at=utc_now(), workflows=workflows,
        expires_at=utc_now() + timedelta(seconds=60), runs=runs or [], cannot=cannot or {}, queue=queue,
    )  # fmt: skip
    redis_client.hset(keys.WORKERS, worker_id, beat.model_dump_json())
    beats.append(worker_id)


MISSING = WorkflowAvailability(ready=False, missing_models=["checkpoints/sdxl.safetensors"])


def test_a_job_no_worker_can_run_waits_and_says_why(
    client: TestClient, redis_client: redis.Redis, settings: Settings, beats: list[str]
) -> None:
    version = CatalogStore(redis_client, settings.queue_name).require_active()
    why = "missing model checkpoints/sdxl.safetensors"
    write_beat(
        redis_client, beats, "w1", runs=[f"tiny@{version}"], cannot={f"txt2img@{version}": why},
        queue=settings.queue_name,
        tiny=WorkflowAvailability(ready=True), txt2img=MISSING,
    )  # fmt: skip

    resp = client.post("/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x"}})
    assert resp.status_code == 202, resp.text
    queue = client.get(f"/tasks/{resp.json()['task_id']}").json()["queue"]
    assert queue["blocked"] == f"no worker can run txt2img@{version[:12]}: {why}"
    assert redis_client.llen(settings.queue_name) == 1  # in line, with its ticket

    tiny = client.post("/workflows/tiny", json={}).json()["task_id"]
    assert client.get(f"/tasks/{tiny}").json()["queue"]["blocked"] is None  # w1 runs it


def test_one_worker_that_runs_the_class_unblocks_it_and_silent_workers_block_nothing() -> None:
    record = JobRecord(task_id="t", workflow_id="txt2img", catalog_version="ab" * 32)
    cannot = _beat("w1").model_copy(update={"runs": ["tiny@" + "ab" * 32], "queue": "q"})
    assert blocked_reason([cannot], record, "q") == (
        f"no worker can run txt2img@{'ab' * 6}: not checked against catalog {'ab' * 6} yet"
    )
    can = _beat("w2").model_copy(update={"runs": ["txt2img@" + "ab" * 32], "queue": "q"})
    assert blocked_reason([cannot, can], record, "q") is None
    assert blocked_reason([cannot, can], record, "another-queue") is None  # none of its workers said
    assert blocked_reason([_beat("old-version-worker")], record, "q") is None  # says nothing of classes


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
