"""The webhook dispatcher against a real Redis and local receivers: deliveries are created by the status
changes themselves, signed, retried under the same id with the same body, stopped by 410, given up after
the last attempt, and a slow receiver holds up no other."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from standardwebhooks.webhooks import Webhook

from comfyjobs import keys
from comfyjobs.jobs.changes import ChangeHub
from comfyjobs.jobs.record import JobRecord, JobStatus
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.metrics import WEBHOOK_DELIVERIES
from comfyjobs.webhooks.deliveries import Deliveries
from comfyjobs.webhooks.dispatcher import WebhookDispatcher
from tests.jobs.test_reconciler import Fixture
from tests.webhooks.receiver import Received, Receiver, running

SECRET = "whsec_" + base64.b64encode(b"comfyjobs-webhook-test-key-32by").decode()


def verified(request: Received) -> dict[str, Any]:
    """The event, once its signature checks out (standardwebhooks raises otherwise)."""
    event: dict[str, Any] = Webhook(SECRET).verify(request.body, request.headers)
    return event


class Scene:
    def __init__(self, redis_url: str, delays_s: tuple[float, ...]) -> None:
        self.fx = Fixture(redis_url)
        self.delays_s = delays_s

    def run(self, work: Callable[[AsyncJobStore], Awaitable[None]]) -> None:
        async def main() -> None:
            client = aioredis.Redis.from_url(self.fx.redis_url)
            subscriber = aioredis.Redis.from_url(self.fx.redis_url)
            hub = ChangeHub(subscriber)
            hub.start()
            store = AsyncJobStore(client, 3600, self.fx.queue, self.fx.messages, hub)
            dispatcher = WebhookDispatcher(
                Deliveries(client),
                hub,
                lambda record: {"task_id": record.task_id, "status": record.status.value},
                secret=SECRET,
                policy=UrlPolicy(["127.0.0.1"], "WEBHOOK_URL_ALLOWLIST"),
                delays_s=self.delays_s,
                timeout_s=10,
            )
            running_dispatcher = asyncio.create_task(dispatcher.run_forever())
            try:
                await work(store)
            finally:
                dispatcher.stop()
                await running_dispatcher
                await hub.stop()
                await subscriber.aclose()
                await client.aclose()

        asyncio.run(main())


async def run_job(store: AsyncJobStore, url: str, outcome: JobStatus = JobStatus.SUCCESS) -> str:
    record = JobRecord(task_id="hooked-" + uuid.uuid4().hex, workflow_id="tiny", webhook_url=url)
    assert (await store.admit(record)).outcome == "created"
    assert await store.update(record.task_id, status=JobStatus.STARTED, worker="w", attempts=1)
    assert await store.update(record.task_id, status=JobStatus.PROGRESS)  # no event of its own
    assert await store.update(record.task_id, status=outcome)
    return record.task_id


async def recorded(store: AsyncJobStore, task_id: str, attempts: int) -> JobRecord:
    """The task once its webhook state counts ``attempts`` (an attempt is recorded just after the
    receiver answered it, and announces itself by no event: checked again until then)."""
    for _ in range(500):
        record = await store.get(task_id)
        assert record is not None
        if record.webhook is not None and record.webhook.attempts >= attempts:
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id}: {attempts} webhook attempts were never recorded")


async def received(receiver: Receiver, check: Callable[[list[Received]], bool], what: str) -> list[Received]:
    return await asyncio.to_thread(receiver.wait, check, 20, what)


def test_deliveries_are_signed_and_retried_under_the_same_id(
    redis_url: str, redis_client: redis.Redis
) -> None:
    receiver = Receiver(lambda n, _: 500 if n <= 3 else 200)  # the first three attempts fail
    scene = Scene(redis_url, delays_s=(0.05, 0.05, 0.05, 0.05))
    task: dict[str, str] = {}

    async def work(store: AsyncJobStore) -> None:
        task["id"] = await run_job(store, receiver.url())

        def both_delivered(requests: list[Received]) -> bool:
            ok = {verified(r)["type"] for r in requests[3:]}
            return ok == {"task.started", "task.succeeded"}

        await received(receiver, both_delivered, "both events to be delivered")
        record = await recorded(store, task["id"], 5)
        assert record.webhook is not None
        assert record.webhook.attempts == 5 and record.webhook.last_status == 200
        assert record.webhook.delivered_at is not None

    with running(receiver):
        scene.run(work)

    by_id: dict[str, list[Received]] = {}
    for request in receiver.received:
        by_id.setdefault(request.headers["webhook-id"], []).append(request)
    assert len(by_id) == 2
    for attempts in by_id.values():
        assert len({r.body for r in attempts}) == 1  # the same event each time (rendered anew)
        event = verified(attempts[-1])
        assert event["data"]["task_id"] == task["id"]
        assert set(event) == {"type", "timestamp", "data"}
    events = {verified(a[0])["type"]: verified(a[0])["data"]["status"] for a in by_id.values()}
    assert events == {"task.started": "STARTED", "task.succeeded": "SUCCESS"}  # the task as it was then
    assert not [d for d in redis_client.zrange(keys.WEBHOOKS_DUE, 0, -1) if task["id"].encode() in d]
    results = redis_client.hgetall(keys.metric(WEBHOOK_DELIVERIES))
    assert int(results[b'["failed"]']) >= 3 and int(results[b'["delivered"]']) >= 2


def test_a_410_stops_the_retries_and_the_last_attempt_gives_up(redis_url: str) -> None:
    gone, failing = Receiver(lambda _n, _r: 410), Receiver(lambda _n, _r: 503)
    scene = Scene(redis_url, delays_s=(0.05, 0.05))  # three attempts at most
    tasks: dict[str, str] = {}

    async def work(store: AsyncJobStore) -> None:
        tasks["gone"] = await run_job(store, gone.url(), JobStatus.CANCELLED)
        tasks["failing"] = await run_job(store, failing.url(), JobStatus.FAILURE)
        await received(failing, lambda r: len(r) >= 6, "three attempts of each event")
        await received(gone, lambda r: len(r) >= 2, "one attempt of each event")
        record = await recorded(store, tasks["failing"], 6)
        assert record.webhook is not None and record.webhook.last_status == 503
        assert record.webhook.delivered_at is None

    with running(gone), running(failing):
        scene.run(work)
    assert len(gone.received) == 2  # 410: never again
    assert {verified(r)["type"] for r in gone.received} == {"task.started", "task.cancelled"}
    assert len(failing.received) == 6  # WEBHOOK_MAX_ATTEMPTS 3, per event
    assert {verified(r)["type"] for r in failing.received} == {"task.started", "task.failed"}


def test_a_slow_receiver_holds_up_no_other(redis_url: str) -> None:
    release = threading.Event()

    def hang(_n: int, _r: Received) -> int:
        release.wait(30)
        return 200

    slow, quick = Receiver(hang), Receiver()
    scene = Scene(redis_url, delays_s=(0.05,))

    async def work(store: AsyncJobStore) -> None:
        for _ in range(5):  # ten deliveries, more than the slow receiver's slots
            await run_job(store, slow.url())
        await received(slow, lambda r: len(r) >= 4, "the slow receiver's slots to fill")
        mine = await run_job(store, quick.url())
        got = await received(quick, lambda r: len(r) >= 2, "the quick receiver's deliveries")
        assert {verified(r)["data"]["task_id"] for r in got} == {mine}
        assert len(slow.received) == 4  # still held up there, with nothing sent past its slots
        release.set()
        await received(slow, lambda r: len(r) >= 10, "the slow receiver's deliveries, once it answers")

    with running(slow), running(quick):
        scene.run(work)


def test_the_body_is_the_event_with_the_task(redis_url: str) -> None:
    receiver = Receiver()
    scene = Scene(redis_url, delays_s=(0.05,))

    async def work(store: AsyncJobStore) -> None:
        task_id = await run_job(store, receiver.url("/in?x=1"))
        got = await received(receiver, lambda r: len(r) >= 2, "two events")
        for request in got:
            assert request.path == "/in?x=1"
            assert request.headers["content-type"] == "application/json"
            assert request.headers["webhook-id"].startswith(f"msg_{task_id}_")
            event = json.loads(request.body)
            assert event["timestamp"].endswith("Z")

    with running(receiver):
        scene.run(work)
