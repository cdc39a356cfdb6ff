"""One subscriber per API process, fanning out in-process: how a thousand SSE streams and long polls wait
for their tasks without holding a Redis connection each.

Every append to a stream a reader may wait on (a task's events, a queue's departures, a task's previews)
is followed, in the same Lua call or pipeline, by ``PUBLISH keys.CHANGES <stream key>``. The hub holds one
pub/sub connection and wakes the waiters of that stream. The streams stay the source of truth: a waiter
registers, then reads them (without blocking), and only then sleeps; a notification lost while the
subscriber reconnects costs a waiter nothing: every waiter is woken on reconnection, and reads. (The
subscriber starts again after any failure, not only Redis's: the waiters depend on it.)
A registration (``Watch``) lasts as long as its reader: an events stream that waits again after each
heartbeat stays registered, and reads its streams only when woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

import redis
import redis.asyncio as aioredis

from comfyjobs import keys

log = logging.getLogger(__name__)

LISTEN_S = 30.0  # one read of the subscription lasts at most this (the connection is checked between)
RECONNECT_S = 1.0


class Watch:
    """A waiter's registration with the hub. It lasts across waits, so a reader that waits again and
    again (an events stream between its heartbeats) registers once and reads Redis only when woken."""

    def __init__(self, waiters: dict[str, set[asyncio.Event]]) -> None:
        self._waiters = waiters
        self._names: frozenset[str] = frozenset()
        self.woken = asyncio.Event()  # set when a followed stream got an entry (or the hub reconnected)

    def follow(self, streams: Iterable[str]) -> bool:
        """Follows exactly ``streams`` from now on. True when some are new: read them before waiting
        (what they got before now woke nobody)."""
        names = frozenset(streams)
        added, dropped = names - self._names, self._names - names
        for name in added:
            self._waiters.setdefault(name, set()).add(self.woken)
        for name in dropped:
            waiting = self._waiters.get(name)
            if waiting is not None:
                waiting.discard(self.woken)
                if not waiting:
                    del self._waiters[name]
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
        watch = Watch(self._waiters)
        watch.follow(streams)
        try:
            yield watch
        finally:
            watch.follow(())

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def _wake(self, stream: str) -> None:
        for woken in self._waiters.get(stream, ()):
            woken.set()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for woken in waiting:
                woken.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.CHANGES)
                self.subscribed.set()
                self._wake_all()  # whatever happened while nobody listened: look again
                while not self._stopping.is_set():
                    message = await pubsub.get_message(timeout=LISTEN_S)
                    if message is not None:
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:  # (Redis lost, or anything else: the streams depend on the hub)
                self.subscribed.clear()
                if isinstance(exc, redis.RedisError | OSError):
                    log.warning("change subscriber lost Redis (%s); reconnecting", exc)
                else:
                    log.exception("change subscriber failed; starting it again")
                self._wake_all()
                with contextlib.suppress(TimeoutError):  # a back-off: nothing to wait on but the clock
                    await asyncio.wait_for(self._stopping.wait(), RECONNECT_S)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
