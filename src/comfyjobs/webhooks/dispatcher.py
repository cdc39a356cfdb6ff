"""Sends the due webhook deliveries: one dispatcher per API process, any number of processes.

Each delivery is signed as Standard Webhooks says (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` with WEBHOOK_SECRET) and
POSTed through the same SSRF guard as URL inputs (WEBHOOK_URL_ALLOWLIST), to the address that was
checked. A 2xx answer delivers it, 410 Gone stops it, anything else (or no answer within
WEBHOOK_TIMEOUT_S) is tried again after exponential back-off, up to WEBHOOK_MAX_ATTEMPTS attempts.

Sends run in a thread pool of their own, at most PER_HOST at once per receiver, with at most HOST_BACKLOG
more waiting here for it: a slow or dead receiver holds its own slots only, never a job's path
(deliveries are created in Redis by the status change) nor another receiver's deliveries. The
dispatcher sleeps until the next delivery is due or a new one is announced (on
``keys.changes_of(WEBHOOKS_DUE)``); a delivery taken by a process that died is taken again after
VISIBILITY_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from comfyjobs import keys
from comfyjobs.errors import MediaError, QueueUnavailableError
from comfyjobs.jobs.changes import ChangeHub
from comfyjobs.jobs.record import JobRecord
from comfyjobs.media.fetch import post
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.webhooks.deliveries import Deliveries, Delivery, Result

log = logging.getLogger(__name__)

THREADS = 16  # sends at once, all receivers together
PER_HOST = 4  # sends at once to one receiver
HOST_BACKLOG = 64  # deliveries to one receiver taken and waiting here; more are left due a while
POSTPONE_S = 5.0  # (that while)
BACKLOG = 2000  # deliveries taken and not yet recorded, at most
VISIBILITY_S = 60.0  # a taken delivery not sent by then (or a sent one not recorded) is taken again
MAX_SLEEP_S = 30.0  # a missed announcement costs at most this
REDIS_RETRY_S = 1.0


class _Receiver:
    """One receiver's share of this process: its send slots, and the deliveries taken for it (sending,
    or waiting for a slot)."""

    def __init__(self) -> None:
        self.slots = asyncio.Semaphore(PER_HOST)
        self.taken = 0


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


class WebhookDispatcher:
    def __init__(
        self,
        deliveries: Deliveries,
        hub: ChangeHub,
        render: Callable[[JobRecord], dict[str, Any]],
        *,
        secret: str,
        policy: UrlPolicy,
        delays_s: Sequence[float],
        timeout_s: float,
    ) -> None:
        """``render``: the task as GET /tasks shows it. ``delays_s``: the wait after each failed attempt;
        their number + 1 is the most attempts a delivery gets."""
        self._deliveries = deliveries
        self._hub = hub
        self._render = render
        self._signer = Webhook(secret)
        self._policy = policy
        self._delays_s = tuple(delays_s)
        self._timeout_s = timeout_s
        self._stopping = asyncio.Event()
        self._freed = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._receivers: dict[str, _Receiver] = {}  # by host, while this process holds deliveries for it
        self._executor: ThreadPoolExecutor | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run_forever(self) -> None:
        self._executor = ThreadPoolExecutor(THREADS, thread_name_prefix="webhook")
        try:
            with self._hub.watch([keys.WEBHOOKS_DUE]) as announced:  # (one subscription, kept)
                while not self._stopping.is_set():
                    announced.woken.clear()  # what is announced from here on ends the sleep below
                    try:
                        sleep_s = await self._take()
                    except QueueUnavailableError as exc:
                        log.warning("webhooks: Redis is unavailable: %s", exc)
                        sleep_s = REDIS_RETRY_S
                    if sleep_s > 0:
                        await self._sleep(sleep_s, announced.woken)
        finally:
            # Stopped: what this process took and did not send is due again at once, for the others (or
            # the next start). A process that dies leaves it to be taken again after VISIBILITY_S.
            unsent = list(self._in_flight)
            for task in self._in_flight.values():
                task.cancel()
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(QueueUnavailableError):
                await self._deliveries.release(unsent)

    async def _take(self) -> float:
        """Starts the due deliveries there is room for; how long to sleep before looking again."""
        room = BACKLOG - len(self._in_flight)
        if room <= 0:
            return MAX_SLEEP_S  # woken by a finished delivery
        now = time.time()
        taken = await self._deliveries.take_due(now, now + VISIBILITY_S, room)
        for delivery in taken:
            if isinstance(delivery, str):
                await self._deliveries.forget(delivery)
            elif delivery.id in self._in_flight:
                continue  # still waiting for its receiver here (taken again after VISIBILITY_S)
            else:
                host = _host(delivery.record.webhook_url or "") if delivery.record else ""
                receiver = self._receivers.setdefault(host, _Receiver())
                if receiver.taken >= HOST_BACKLOG:
                    # That receiver is slow: the delivery stays in Redis, for later (or another
                    # process), and holds no room here that other receivers' deliveries need.
                    await self._deliveries.hold(delivery.id, now + POSTPONE_S)
                    continue
                receiver.taken += 1
                task = asyncio.create_task(self._deliver(delivery, receiver), name=f"webhook-{delivery.id}")
                self._in_flight[delivery.id] = task
                task.add_done_callback(functools.partial(self._finished, delivery.id, host))
        if len(taken) >= room:
            return 0.0
        next_at = await self._deliveries.next_due_at()
        return MAX_SLEEP_S if next_at is None else min(MAX_SLEEP_S, max(0.0, next_at - time.time()))

    async def _sleep(self, seconds: float, announced: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in (announced, self._stopping, self._freed)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            self._freed.clear()

    def _finished(self, delivery_id: str, host: str, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        receiver = self._receivers[host]
        receiver.taken -= 1
        if receiver.taken <= 0:
            del self._receivers[host]
        self._freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook %s failed unexpectedly", delivery_id, exc_info=task.exception())

    def _body(self, delivery: Delivery, record: JobRecord) -> str:
        event = {"type": delivery.type, "timestamp": iso(delivery.at), "data": self._render(record)}
        return json.dumps(event, separators=(",", ":"))

    async def _deliver(self, delivery: Delivery, receiver: _Receiver) -> None:
        try:
            await self._attempt(delivery, receiver)
        except QueueUnavailableError as exc:  # the attempt is not recorded: taken again later
            log.warning("webhook %s: outcome not recorded (Redis is unavailable): %s", delivery.id, exc)
        except Exception:  # a bug, not the receiver: counted as a failed attempt, so it ends some day
            log.exception("webhook %s failed unexpectedly", delivery.id)
            with contextlib.suppress(QueueUnavailableError):
                await self._record(delivery, None, None)

    async def _attempt(self, delivery: Delivery, receiver: _Receiver) -> None:
        record = delivery.record
        if record is None or not record.webhook_url:
            log.error("webhook %s: its task's record is unreadable; dropped", delivery.id)
            await self._deliveries.record(
                delivery, result="dropped", status=None, delivered_at=None, retry_at=None
            )
            return
        url = record.webhook_url
        # Rendered at each attempt, from the task as it was at the change: the same event, with output
        # links that are still valid (a retry hours later must not carry links that have expired).
        body = self._body(delivery, record)
        async with receiver.slots:
            await self._deliveries.hold(delivery.id, time.time() + self._timeout_s + VISIBILITY_S)
            sent_at = datetime.now(UTC)
            headers = {
                "Content-Type": "application/json",
                "webhook-id": delivery.id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": self._signer.sign(delivery.id, sent_at, body),
            }
            send = functools.partial(
                post, url, body.encode(), headers, policy=self._policy, timeout_s=self._timeout_s
            )
            try:
                status: int | None = await asyncio.get_running_loop().run_in_executor(self._executor, send)
            except MediaError as exc:
                log.info("webhook %s to %s: %s", delivery.id, url, exc)
                status = None
        await self._record(delivery, status, sent_at)

    async def _record(self, delivery: Delivery, status: int | None, sent_at: datetime | None) -> None:
        attempt = delivery.attempts + 1
        retry_at: float | None = None
        result: Result
        if status is not None and 200 <= status < 300:
            result = "delivered"
        elif status == 410:
            result = "gone"  # the receiver wants no more
        elif attempt > len(self._delays_s):
            result = "exhausted"
            log.warning("webhook %s: gave up after %d attempts", delivery.id, attempt)
        else:
            result, retry_at = "failed", time.time() + self._delays_s[attempt - 1]
        delivered_at = iso(sent_at.timestamp()) if result == "delivered" and sent_at else None
        await self._deliveries.record(
            delivery, result=result, status=status, delivered_at=delivered_at, retry_at=retry_at
        )
