"""The reconciler against a real Redis: stranded jobs are found and sent again; healthy ones are not."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.jobs.delivery import JobMessages, make_celery
from comfyjobs.jobs.reconciler import Reconciled, Reconciler
from comfyjobs.jobs.record import JobRecord, JobStatus, utc_now
from comfyjobs.jobs.store import AsyncJobStore, JobStore
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings
from tests.conftest import REPO

T = TypeVar("T")


def queued(redis_client: redis.Redis, queue: str) -> list[str]:
    return [json.loads(m)["headers"]["id"] for m in redis_client.lrange(queue, 0, -1)]


def lose_message(redis_client: redis.Redis, queue: str, task_id: str) -> None:
    """As Redis losing its last second of writes, or a worker dying with the message, would."""
    for raw in redis_client.lrange(queue, 0, -1):
        if json.loads(raw)["headers"]["id"] == task_id:
            assert redis_client.lrem(queue, 1, raw) == 1


class Fixture:
    def __init__(self, redis_url: str) -> None:
        self.queue = f"reconcile-{uuid.uuid4().hex[:8]}"
        self.settings = Settings.load(redis_url=redis_url, queue_name=self.queue)
        self.registry = load_registry(REPO / "manifests", REPO / "workflows")
        self.messages = JobMessages(make_celery(self.settings, self.registry), self.queue)
        self.sync = JobStore(redis.Redis.from_url(redis_url), 3600, self.queue)
        self.redis_url = redis_url

    def run(self, work: Callable[[AsyncJobStore, Reconciler], Awaitable[T]]) -> T:
        async def main() -> T:
            client = aioredis.Redis.from_url(self.redis_url)
            store = AsyncJobStore(client, 3600, self.queue, self.messages)
            try:
                return await work(store, Reconciler(client, store, self.queue, interval_s=1))
            finally:
                await client.aclose()

        return asyncio.run(main())

    def admit(self, record: JobRecord) -> None:
        self.run(lambda store, _: store.admit(record))


def test_a_running_job_without_lease_goes_back_in_line(redis_url: str, redis_client: redis.Redis) -> None:
    fx = Fixture(redis_url)
    lost = JobRecord(task_id="lost-" + uuid.uuid4().hex, workflow_id="tiny")
    alive = JobRecord(task_id="alive-" + uuid.uuid4().hex, workflow_id="tiny")
    for record in (lost, alive):
        fx.admit(record)
        lose_message(redis_client, fx.queue, record.task_id)  # delivered: off the list
        assert fx.sync.update(record.task_id, status=JobStatus.STARTED, worker="w-gone", attempts=1)
    assert fx.sync.acquire_lease(alive.task_id, "w-alive", ttl_s=60)  # its worker still renews it

    found: Reconciled = fx.run(lambda _, rec: rec.reconcile_once())

    assert found.lost_workers == [lost.task_id]
    back = fx.sync.get(lost.task_id)
    assert back is not None
    assert (back.status, back.worker, back.attempts) == (JobStatus.PENDING, None, 1)
    assert queued(redis_client, fx.queue) == [lost.task_id]
    place = fx.run(lambda store, _: store.place(lost.task_id))
    assert place.position == 1
    assert fx.sync.get(alive.task_id).status == JobStatus.STARTED  # type: ignore[union-attr]
    # Nothing more to do the second time.
    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_workers == []


def test_a_waiting_job_whose_message_is_gone_is_sent_again(redis_url: str, redis_client: redis.Redis) -> None:
    fx = Fixture(redis_url)
    long_ago = utc_now() - timedelta(minutes=10)
    lost = JobRecord(task_id="nomsg-" + uuid.uuid4().hex, workflow_id="tiny", created_at=long_ago)
    sent = JobRecord(task_id="msg-" + uuid.uuid4().hex, workflow_id="tiny", created_at=long_ago)
    fresh = JobRecord(task_id="fresh-" + uuid.uuid4().hex, workflow_id="tiny")  # within the grace period
    for record in (lost, sent, fresh):
        fx.admit(record)
    lose_message(redis_client, fx.queue, lost.task_id)
    lose_message(redis_client, fx.queue, fresh.task_id)

    found: Reconciled = fx.run(lambda _, rec: rec.reconcile_once())

    assert found.lost_messages == [lost.task_id]
    assert sorted(queued(redis_client, fx.queue)) == sorted([sent.task_id, lost.task_id])


def test_a_delivered_message_counts_only_while_a_worker_holds_the_job(
    redis_url: str, redis_client: redis.Redis
) -> None:
    fx = Fixture(redis_url)
    long_ago = utc_now() - timedelta(hours=1)
    held = JobRecord(task_id="held-" + uuid.uuid4().hex, workflow_id="tiny", created_at=long_ago)
    orphaned = JobRecord(task_id="orphaned-" + uuid.uuid4().hex, workflow_id="tiny", created_at=long_ago)
    for record in (held, orphaned):
        fx.admit(record)
    # Both delivered (taken off the queue, as a worker's transport does); only one worker is alive and
    # has taken its job's lease (while it waits for its ComfyUI, say). The other worker died.
    while redis_client.rpop(fx.queue) is not None:
        pass
    assert fx.sync.acquire_lease(held.task_id, "w-alive", ttl_s=60)

    found: Reconciled = fx.run(lambda _, rec: rec.reconcile_once())

    assert found.lost_messages == [orphaned.task_id]
    assert queued(redis_client, fx.queue) == [orphaned.task_id]
    assert redis_client.exists(keys.job(held.task_id))


def test_a_worker_whose_job_was_taken_back_cannot_write_to_it(redis_url: str) -> None:
    fx = Fixture(redis_url)
    record = JobRecord(task_id="stale-" + uuid.uuid4().hex, workflow_id="tiny")
    fx.admit(record)
    assert fx.sync.update(
        record.task_id, expect={"attempts": 0}, status=JobStatus.STARTED, worker="w1", attempts=1
    )
    # w1's lease lapsed (Redis was away, say): the reconciler takes the job back.
    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_workers == [record.task_id]

    mine = {"attempts": 1, "worker": "w1"}
    assert not fx.sync.update(record.task_id, expect=mine, status=JobStatus.PROGRESS)
    assert not fx.sync.update(record.task_id, expect=mine, status=JobStatus.SUCCESS)
    back = fx.sync.get(record.task_id)
    assert back is not None and back.status == JobStatus.PENDING
    assert fx.run(lambda store, _: store.place(record.task_id)).position == 1  # still in line
