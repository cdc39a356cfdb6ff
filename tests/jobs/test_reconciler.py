"""The reconciler against a real Redis: stranded jobs are found and sent again; healthy ones are not."""

from __future__ import annotations

import asyncio
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
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.jobs.worker_store import JobStore, Take
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings
from tests.conftest import REPO

T = TypeVar("T")


def tickets(redis_client: redis.Redis, queue: str) -> int:
    return int(redis_client.llen(queue))


class Fixture:
    def __init__(self, redis_url: str) -> None:
        self.queue = f"reconcile-{uuid.uuid4().hex[:8]}"
        self.settings = Settings.load(redis_url=redis_url, queue_name=self.queue)
        self.registry = load_registry(REPO / "manifests", REPO / "workflows")
        self.messages = JobMessages(make_celery(self.settings, self.registry), self.queue)
        self.sync = JobStore(redis.Redis.from_url(redis_url), 3600, self.queue, self.messages)
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
    behind = JobRecord(task_id="behind-" + uuid.uuid4().hex, workflow_id="tiny")
    for record in (lost, alive, behind):
        fx.admit(record)
    for worker in ("w-gone", "w-alive"):
        task_id = fx.sync.take(Take(worker, 60)).task_id
        assert fx.sync.update(str(task_id), status=JobStatus.STARTED, worker=worker, attempts=1)
    redis_client.delete(fx.queue)  # the workers took their tickets
    redis_client.delete(keys.job_lease(lost.task_id))  # w-gone died: its lease lapsed

    found: Reconciled = fx.run(lambda _, rec: rec.reconcile_once())

    assert found.lost_workers == [lost.task_id]
    back = fx.sync.get(lost.task_id)
    assert back is not None
    assert (back.status, back.worker, back.attempts) == (JobStatus.PENDING, None, 1)
    assert tickets(redis_client, fx.queue) == 1  # one ticket with it
    # Back in its old place: ahead of the job that came after it.
    assert fx.run(lambda store, _: store.place(lost.task_id)).position == 1
    assert fx.run(lambda store, _: store.place(behind.task_id)).position == 2
    assert fx.sync.get(alive.task_id).status == JobStatus.STARTED  # type: ignore[union-attr]
    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_workers == []  # nothing more to do
    assert fx.sync.take(Take("w-next", 60)).task_id == lost.task_id


def test_lost_tickets_are_made_up_for_by_number(redis_url: str, redis_client: redis.Redis) -> None:
    fx = Fixture(redis_url)
    long_ago = utc_now() - timedelta(minutes=10)
    old = [
        JobRecord(task_id=f"old{i}-{uuid.uuid4().hex}", workflow_id="tiny", created_at=long_ago)
        for i in (1, 2)
    ]
    fresh = JobRecord(task_id="fresh-" + uuid.uuid4().hex, workflow_id="tiny")  # within the grace period
    for record in (*old, fresh):
        fx.admit(record)
    assert tickets(redis_client, fx.queue) == 3
    redis_client.delete(fx.queue)  # lost: say, taken by workers that died before they took a job

    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_tickets == 2  # no more than jobs past the grace
    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_tickets == 1
    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_tickets == 0
    assert tickets(redis_client, fx.queue) == 3


def test_a_worker_whose_job_was_taken_back_cannot_write_to_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    fx = Fixture(redis_url)
    record = JobRecord(task_id="stale-" + uuid.uuid4().hex, workflow_id="tiny")
    fx.admit(record)
    assert fx.sync.take(Take("w1", 60)).task_id == record.task_id
    assert fx.sync.update(
        record.task_id, expect={"attempts": 0}, status=JobStatus.STARTED, worker="w1", attempts=1
    )
    redis_client.delete(keys.job_lease(record.task_id))
    # w1's lease lapsed (Redis was away, say): the reconciler takes the job back.
    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_workers == [record.task_id]

    mine = {"attempts": 1, "worker": "w1"}
    assert not fx.sync.update(record.task_id, expect=mine, status=JobStatus.PROGRESS)
    assert not fx.sync.update(record.task_id, expect=mine, status=JobStatus.SUCCESS)
    back = fx.sync.get(record.task_id)
    assert back is not None and back.status == JobStatus.PENDING
    assert fx.run(lambda store, _: store.place(record.task_id)).position == 1  # still in line


def test_a_job_taken_by_a_worker_lost_before_it_started_goes_back(
    redis_url: str, redis_client: redis.Redis
) -> None:
    fx = Fixture(redis_url)
    record = JobRecord(task_id="taken-" + uuid.uuid4().hex, workflow_id="tiny")
    fx.admit(record)
    assert fx.sync.take(Take("w-gone", 60)).task_id == record.task_id
    redis_client.delete(fx.queue)  # its ticket went with the worker
    redis_client.delete(keys.job_lease(record.task_id))  # killed before it wrote STARTED

    assert fx.run(lambda _, rec: rec.reconcile_once()).lost_workers == [record.task_id]
    assert fx.run(lambda store, _: store.place(record.task_id)).position == 1
    assert tickets(redis_client, fx.queue) == 1
    assert fx.sync.take(Take("w-next", 60)).task_id == record.task_id
