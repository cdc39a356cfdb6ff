"""Waiting for a task's changes on the API's one change subscriber, against a real Redis: a watch that
lasts across waits reads the task's streams only when newly registered or woken (a quiet task costs no
read per wait), misses no change (before it registered, between its first read and its subscription,
or between a read and the next wait), follows the queue's departures only while told, and lets go of
everything at the end; the subscriber is subscribed to the streams waited on and no others, and still
hears earlier versions' announcements; a quiet stream asks whether its task expired only now and then."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from comfyjobs import keys
from comfyjobs.api.task_feed import ExpiryCheck
from comfyjobs.jobs.changes import ChangeHub
from comfyjobs.jobs.record import JobRecord, JobStatus
from comfyjobs.jobs.store import AsyncJobStore, EventId
from comfyjobs.jobs.worker_store import Take
from tests.jobs.test_reconciler import Fixture

QUIET_S = 0.05  # a wait's timeout where nothing happens (the assertions count reads, not time)


class CountingRedis(aioredis.Redis):
    """The store's client, counting its XREADs (each is one read of the task's streams); ``after_read``,
    when set, runs once after the next one has its reply."""

    xreads = 0
    after_read: Callable[[], Awaitable[None]] | None = None

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.xreads += 1
        reply = await super().xread(*args, **kwargs)
        if self.after_read is not None:
            hook, self.after_read = self.after_read, None
            await hook()
        return reply


class LateSubscriber(aioredis.Redis):
    """The hub's client; its subscription to the channel of ``stream`` is sent only once ``before`` ran."""

    stream = ""
    before: Callable[[], Awaitable[None]] | None = None

    def pubsub(self, **kwargs: Any) -> PubSub:
        client = self

        class Late(PubSub):
            async def subscribe(self, *args: Any, **kw: Any) -> None:
                if client.before is not None and keys.changes_of(client.stream) in args:
                    hook, client.before = client.before, None
                    await hook()
                await super().subscribe(*args, **kw)

        return Late(self.connection_pool, **kwargs)


def scene(
    redis_url: str,
    work: Callable[[Fixture, AsyncJobStore, CountingRedis, ChangeHub], Awaitable[None]],
    subscriber: aioredis.Redis | None = None,
) -> None:
    fx = Fixture(redis_url)

    async def main() -> None:
        client = CountingRedis.from_url(redis_url)
        hub = ChangeHub(subscriber or aioredis.Redis.from_url(redis_url))
        hub.start()
        try:
            await hub.subscribed.wait()  # (subscribing wakes every watch: not counted below)
            await work(fx, AsyncJobStore(client, 3600, fx.queue, fx.messages, hub), client, hub)
            assert hub.waiting == 0  # every watch let go
        finally:
            await hub.stop()
            await client.aclose()

    asyncio.run(main())


async def pending_job(store: AsyncJobStore) -> str:
    record = JobRecord(task_id="watched-" + uuid.uuid4().hex, workflow_id="tiny")
    await store.admit(record)
    return record.task_id


async def last_event(store: AsyncJobStore, task_id: str) -> EventId:
    snapshot = await store.snapshot(task_id)
    assert snapshot is not None and snapshot.last_event_id is not None
    return snapshot.last_event_id


def test_a_kept_watch_reads_only_when_woken(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        task_id = await pending_job(store)
        cursor = await last_event(store, task_id)
        with store.watching() as watch:
            watch.follow([keys.job_events(task_id)])
            assert await watch.wait(30)  # woken once its subscription is confirmed
            reads = client.xreads
            for _ in range(3):
                change = await store.wait_for_change(task_id, cursor, QUIET_S, watch=watch)
                assert change.empty
            assert client.xreads == reads  # not once per wait

            assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-1")
            change = await store.wait_for_change(task_id, cursor, 30, watch=watch)
            assert [e.changes["status"] for e in change.events] == ["STARTED"]
            assert client.xreads == reads + 1

    scene(redis_url, work)


def test_a_change_right_after_a_read_wakes_the_next_wait(redis_url: str) -> None:
    """A change whose notice reaches the hub after a read, before the reader waits again, is not lost."""

    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        task_id = await pending_job(store)
        cursor = await last_event(store, task_id)

        async def change_and_let_the_hub_hear_of_it() -> None:
            with hub.watch([keys.job_events(task_id)]) as witness:
                assert fx.sync.update(task_id, status=JobStatus.PROGRESS)
                assert await witness.wait(30)  # the hub has woken every watch of the stream by now

        with store.watching() as watch:
            watch.follow([keys.job_events(task_id)])
            assert await watch.wait(30)  # subscribed: from here on, each change's notice wakes it
            assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-1")
            client.after_read = change_and_let_the_hub_hear_of_it  # after the read that sees STARTED
            change = await store.wait_for_change(task_id, cursor, 30, watch=watch)
            assert [e.changes["status"] for e in change.events] == ["STARTED"]
            change = await store.wait_for_change(task_id, change.events[-1].id, 5, watch=watch)
            assert [e.changes["status"] for e in change.events] == ["PROGRESS"]

    scene(redis_url, work)


def test_a_change_before_the_subscription_takes_effect_is_not_lost(redis_url: str) -> None:
    """Announced after the watch's first read, before the hub subscribed to the stream: announced to
    nobody. The subscription's confirmation wakes the watch, and it reads again."""
    subscriber = LateSubscriber.from_url(redis_url)

    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        task_id = await pending_job(store)
        cursor = await last_event(store, task_id)
        read = asyncio.Event()

        async def first_read_done() -> None:
            read.set()

        async def change_after_the_first_read() -> None:
            await read.wait()
            assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-1")

        subscriber.stream, subscriber.before = keys.job_events(task_id), change_after_the_first_read
        client.after_read = first_read_done
        change = await store.wait_for_change(task_id, cursor, 30)
        assert [e.changes["status"] for e in change.events] == ["STARTED"]
        assert subscriber.before is None and client.xreads == 2

    scene(redis_url, work, subscriber)


async def subscribers(client: aioredis.Redis, *streams: str) -> list[int]:
    """How many subscribe to each stream's changes, as Redis counts them."""
    counts: Any = await client.pubsub_numsub(*map(keys.changes_of, streams))
    return [int(n) for _, n in counts]


def test_the_hub_subscribes_to_the_streams_waited_on_and_no_others(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        first, second = (keys.job_events(f"{n}-{uuid.uuid4().hex}") for n in ("first", "second"))
        with hub.watch([first]) as watch:
            assert await watch.wait(30)  # woken by its subscription's confirmation
            assert await subscribers(client, first, second) == [1, 0]
        with hub.watch([second]) as watch:
            assert await watch.wait(30)  # (sent after the first's unsubscription)
            assert await subscribers(client, first, second) == [0, 1]
            await client.publish(keys.changes_of(second), second)
            assert await watch.wait(30)

    scene(redis_url, work)


def test_the_hub_subscribes_again_after_losing_its_connection(redis_url: str) -> None:
    name = "hub-" + uuid.uuid4().hex  # (the session's Redis has other subscribers: only this one is cut)

    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        stream = keys.job_events("followed-" + uuid.uuid4().hex)
        with hub.watch([stream]) as watch:
            assert await watch.wait(30)  # subscribed
            [connection] = [c for c in await client.client_list(_type="pubsub") if c["name"] == name]
            assert await client.client_kill_filter(_id=connection["id"]) == 1
            while await subscribers(client, stream) != [1]:  # woken by the loss, then by the new subscription
                assert await watch.wait(30)

    scene(redis_url, work, aioredis.Redis.from_url(redis_url, client_name=name))


def test_announcements_of_earlier_versions_still_wake_waiters(redis_url: str) -> None:
    """Workers not yet upgraded announce every append on the one channel keys.CHANGES."""

    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        stream = keys.job_events("legacy-" + uuid.uuid4().hex)
        with hub.watch([stream]) as watch:
            assert await watch.wait(30)  # subscribed
            await client.publish(keys.CHANGES, stream)
            assert await watch.wait(30)

    scene(redis_url, work)


def test_a_new_watch_sees_what_came_before_it(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        task_id = await pending_job(store)
        cursor = await last_event(store, task_id)
        assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-1")  # before anyone watches

        change = await store.wait_for_change(task_id, cursor, 30)

        assert [e.changes["status"] for e in change.events] == ["STARTED"]

    scene(redis_url, work)


def test_departures_wake_a_watch_only_while_it_follows_them(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        first, second, third = [await pending_job(store) for _ in range(3)]
        snapshot = await store.snapshot(third)
        assert snapshot is not None and snapshot.last_event_id is not None
        cursor, departures = snapshot.last_event_id, snapshot.last_departure
        with store.watching() as watch:
            watch.follow([keys.job_events(third)])
            assert await watch.wait(30)  # woken once its subscription is confirmed
            reads = client.xreads
            # Not following departures: the first job leaving the queue does not wake the third's wait.
            assert fx.sync.take(Take("w-1", 60)).task_id == first  # type: ignore[union-attr]
            assert (await store.wait_for_change(third, cursor, QUIET_S, watch=watch)).empty
            assert client.xreads == reads
            # Following them from now on: read at once, and what left before is there.
            change = await store.wait_for_change(third, cursor, 30, departures, watch=watch)
            assert change.departed is not None and change.departed != departures
            assert not change.events
            assert client.xreads == reads + 1
            assert await watch.wait(30)  # (its subscription to them confirmed: that woke it)
            assert hub.waiting == 2  # the task's events and the departures
            # Dropped again (the job started, say): the next departure wakes nothing.
            assert (await store.wait_for_change(third, cursor, QUIET_S, watch=watch)).empty
            assert hub.waiting == 1
            assert fx.sync.take(Take("w-1", 60)).task_id == second  # type: ignore[union-attr]
            assert (await store.wait_for_change(third, cursor, QUIET_S, watch=watch)).empty
            assert client.xreads == reads + 1

    scene(redis_url, work)


def test_a_quiet_stream_asks_whether_its_task_expired_only_now_and_then(redis_url: str) -> None:
    async def work(fx: Fixture, store: AsyncJobStore, client: CountingRedis, hub: ChangeHub) -> None:
        task_id, gone = await pending_job(store), "gone-" + uuid.uuid4().hex
        assert not await ExpiryCheck(store, gone, every_s=3600).expired()  # not asked yet
        assert await ExpiryCheck(store, gone, every_s=0).expired()
        assert not await ExpiryCheck(store, task_id, every_s=0).expired()

    scene(redis_url, work)
