"""One subscriber per API process, fanning out in-process: how a thousand SSE streams and long polls wait
for their tasks without holding a Redis connection each.

Every append to a stream a reader may wait on (a task's events, a queue's departures, a task's previews)
is followed, in the same Lua call or pipeline, by ``PUBLISH keys.changes_of(stream) <stream>``. The hub
holds one pub/sub connection, subscribed to the channels of the streams its process's readers wait on
(and only those: a process hears of its own readers' streams, not of every job in the fleet), and wakes
the waiters of a stream when it hears of it. The streams stay the source of truth: a waiter registers,
then reads them (without blocking), and only then sleeps. What is appended between that read and the
hub's subscription taking effect is announced to nobody, so the subscription's confirmation wakes the
stream's waiters too, and they read again. A notification lost while the subscriber reconnects costs a
waiter nothing either: every waiter is woken on reconnection, and reads. (The subscriber starts again
after any failure, not only Redis's: the waiters depend on it.)
A registration (``Watch``) lasts as long as its reader: an events stream that waits again after each
heartbeat stays registered, and reads its streams only when woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from comfyjobs import keys

log = logging.getLogger(__name__)

LISTEN_S = 30.0  # one read of the subscription lasts at most this (the connection is checked between)
RECONNECT_S = 1.0


class Watch:
    """A waiter's registration with the hub. It lasts across waits, so a reader that waits again and
    again (an events stream between its heartbeats) registers once and reads Redis only when woken."""

    def __init__(self, hub: ChangeHub) -> None:
        self._hub = hub
        self._names: frozenset[str] = frozenset()
        self.woken = asyncio.Event()  # set when a followed stream got an entry (or the hub reconnected)

    def follow(self, streams: Iterable[str]) -> bool:
        """Follows exactly ``streams`` from now on. True when some are new: read them before waiting
        (what they got before now woke nobody)."""
        names = frozenset(streams)
        added, dropped = names - self._names, self._names - names
        for name in added:
            self._hub.add_waiter(name, self.woken)
        for name in dropped:
            self._hub.drop_waiter(name, self.woken)
        self._names = names
        return bool(added)

    async def wait(self, timeout_s: float) -> bool:
        """True once woken (and ready to be woken again: read after this, not before); False when
        ``timeout_s`` passed first."""
        if not self.woken.is_set():
            try:
                await asyncio.wait_for(self.woken.wait(), max(timeout_s, 0.0))
            except TimeoutError:
                return False
        self.woken.clear()
        return True


class ChangeHub:
    def __init__(self, client: aioredis.Redis) -> None:
        """``client``: its socket timeout must outlast LISTEN_S."""
        self._client = client
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._moved = asyncio.Event()  # a stream got its first waiter or lost its last: subscribe anew
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-hub")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake_all()

    @contextlib.contextmanager
    def watch(self, streams: Iterable[str] = ()) -> Iterator[Watch]:
        """A watch on ``streams`` from now on (more may be followed later), ended on leaving."""
        watch = Watch(self)
        watch.follow(streams)
        try:
            yield watch
        finally:
            watch.follow(())

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def add_waiter(self, stream: str, woken: asyncio.Event) -> None:
        waiting = self._waiters.setdefault(stream, set())
        if not waiting:
            self._moved.set()
        waiting.add(woken)

    def drop_waiter(self, stream: str, woken: asyncio.Event) -> None:
        waiting = self._waiters.get(stream)
        if waiting is not None:
            waiting.discard(woken)
            if not waiting:
                del self._waiters[stream]
                self._moved.set()

    def _wake(self, stream: str) -> None:
        for woken in self._waiters.get(stream, ()):
            woken.set()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for woken in waiting:
                woken.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            pubsub = self._client.pubsub()
            # Set as this connection is let go. Its tasks look at it as well as being cancelled: a cancel
            # that lands as redis-py's send completes is lost (asyncio.wait_for in Python 3.11).
            closed = asyncio.Event()
            tasks: list[asyncio.Task[Any]] = []
            failed = False
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                assert pubsub.connection is not None
                # Two tasks use the connection: a command retried by either (redis-py reconnects, and
                # subscribes again to what it knows of) could lose what the other sent meanwhile. Without
                # retries a failure is raised, ends both, and this starts again from what is followed then.
                pubsub.connection.retry = Retry(NoBackoff(), 0)
                self._moved.clear()
                followed = set(self._waiters)
                await pubsub.subscribe(keys.CHANGES, *map(keys.changes_of, followed))
                self.subscribed.set()
                tasks = [
                    asyncio.create_task(self._listen(pubsub, closed)),
                    asyncio.create_task(self._follow(pubsub, followed, closed)),
                    asyncio.create_task(self._stopping.wait()),
                ]
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # (the first two end only by failing)
            except Exception as exc:  # (Redis lost, or anything else: the streams depend on the hub)
                self.subscribed.clear()
                if isinstance(exc, redis.RedisError | OSError):
                    log.warning("change subscriber lost Redis (%s); reconnecting", exc)
                else:
                    log.exception("change subscriber failed; starting it again")
                self._wake_all()
                failed = True
            finally:
                closed.set()
                for task in tasks:
                    task.cancel()
                # (A cancel lost in a send leaves a read of up to LISTEN_S: closing the connection ends it.)
                late = (await asyncio.wait(tasks, timeout=RECONNECT_S))[1] if tasks else set()
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.gather(*late, return_exceptions=True)
            if failed:
                with contextlib.suppress(TimeoutError):  # a back-off: nothing to wait on but the clock
                    await asyncio.wait_for(self._stopping.wait(), RECONNECT_S)

    async def _listen(self, pubsub: PubSub, closed: asyncio.Event) -> None:
        """Wakes the waiters of each stream announced, and of each stream whose subscription is confirmed
        (what came between their first read and then was announced to nobody: they read again)."""
        while not closed.is_set():
            message: dict[str, Any] | None = await pubsub.get_message(timeout=LISTEN_S)
            if message is None:
                continue
            kind, data = message["type"], message["data"]
            if kind == "message":
                self._wake(data.decode() if isinstance(data, bytes) else str(data))
            elif kind == "subscribe":
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                self._wake(channel.removeprefix(keys.CHANGES_OF))

    async def _follow(self, pubsub: PubSub, followed: set[str], closed: asyncio.Event) -> None:
        """Keeps the subscriptions to the streams waited on (``followed``: those subscribed to so far)."""
        while not closed.is_set():
            await self._moved.wait()
            self._moved.clear()
            wanted = set(self._waiters)
            new, gone = wanted - followed, followed - wanted
            followed.clear()
            followed.update(wanted)
            if gone:
                await pubsub.unsubscribe(*map(keys.changes_of, gone))
            if new:
                await pubsub.subscribe(*map(keys.changes_of, new))
