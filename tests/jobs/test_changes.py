"""Waiting for a task's changes on the API's one change subscriber, against a real Redis: a watch that
lasts across waits reads the task's streams only when newly registered or woken (a quiet task costs no
read per wait), sees what came before it registered, and follows the queue's departures only while told."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from comfyjobs.jobs.changes import ChangeHub
from comfyjobs.jobs.record import JobRecord, JobStatus
from comfyjobs.jobs.store import AsyncJobStore
from tests.jobs.test_reconciler import Fixture

QUIET_S = 0.05  # a wait's timeout where nothing happens (the assertions count reads, not time)


class CountingRedis(aioredis.Redis):
    """The store's client, counting its XREADs: each is one read of the task's streams."""

    xreads = 0

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.xreads += 1
        return await super().xread(*args, **kwargs)


def scene(redis_url: str, work: Callable[[Fixture, AsyncJobStore, CountingRedis], Awaitable[None]]) -> None:
    fx = Fixture(redis_url)

    async def main() -> None:
        client = CountingRedis.from_url(redis_url)
        hub = ChangeHub(aioredis.Redis.from_url(redis_url))
        hub.start()
        try:
            await hub.subscribed.wait()  # (subscribing wakes every watch: not counted below)
            await work(fx, AsyncJobStore(client, 3600, fx.queue, fx.messages, hub), client)
        finally:
            await hub.stop()
            await client.aclose()

    asyncio.run(main())


async def pending_job(store: AsyncJobStore) -> str:
    record = JobRecord(task_id="watched-" + uuid.uuid4().hex, workflow_id="tiny")
    await store.admit(record)
    return record.task_id


def test_a_kept_watch_reads_only_when_woken(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis) -> None:
        task_id = await pending_job(store)
        snapshot = await store.snapshot(task_id)
        assert snapshot is not None and snapshot.last_event_id is not None
        cursor = snapshot.last_event_id
        with store.watching() as watch:
            for _ in range(3):
                change = await store.wait_for_change(task_id, cursor, QUIET_S, watch=watch)
                assert change.empty
            assert client.xreads == 1  # when it registered; not once per wait

            assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-1")
            change = await store.wait_for_change(task_id, cursor, 30, watch=watch)
            assert [e.changes["status"] for e in change.events] == ["STARTED"]
            assert client.xreads == 2

    scene(redis_url, work)


def test_a_new_watch_sees_what_came_before_it(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis) -> None:
        task_id = await pending_job(store)
        snapshot = await store.snapshot(task_id)
        assert snapshot is not None and snapshot.last_event_id is not None
        assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-1")  # before anyone watches

        change = await store.wait_for_change(task_id, snapshot.last_event_id, 30)

        assert [e.changes["status"] for e in change.events] == ["STARTED"]

    scene(redis_url, work)


def test_departures_wake_a_watch_only_while_it_follows_them(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis) -> None:
        first, second = await pending_job(store), await pending_job(store)
        snapshot = await store.snapshot(second)
        assert snapshot is not None and snapshot.last_event_id is not None
        cursor, departures = snapshot.last_event_id, snapshot.last_departure
        with store.watching() as watch:
            # Not following departures: the first job leaving the queue does not wake the second's wait.
            assert (await store.wait_for_change(second, cursor, QUIET_S, watch=watch)).empty
            assert fx.sync.claim("w-1", lease_s=60).task_id == first
            assert (await store.wait_for_change(second, cursor, QUIET_S, watch=watch)).empty
            reads = client.xreads
            assert reads == 1  # when it registered
            # Following them from now on: read at once, and what left before is there.
            change = await store.wait_for_change(second, cursor, 30, departures, watch=watch)
            assert change.departed is not None and change.departed != departures
            assert not change.events
            assert client.xreads == reads + 1

    scene(redis_url, work)
