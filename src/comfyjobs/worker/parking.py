"""Job threads that found only jobs they cannot run (a take said Blocked) wait here, holding their Celery
slot so the worker takes no more tickets it would only hand on, until there is a reason to look again: a
job of a class this worker runs put in line (heard on the queue's arrivals channel, subscribed only while
a thread waits), this worker's capabilities changed, or the worker stopping; at most PARK_S each time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import redis

from comfyjobs import keys

log = logging.getLogger(__name__)

PARK_S = 30.0  # a parked thread looks again this often in any case (a missed announcement costs no more)
LISTEN_S = 1.0  # the listener's read ends this often to ask whether to stop or unsubscribe


class Parking:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0
        self.parked = 0

    def generation(self) -> int:
        """Taken before a take: a wake between the take and ``wait`` is not missed."""
        with self._changed:
            return self._generation

    def wait(self, since: int, timeout_s: float = PARK_S) -> None:
        with self._changed:
            self.parked += 1
            self._changed.notify_all()  # (the listener subscribes)
            try:
                self._changed.wait_for(lambda: self._generation != since, timeout_s)
            finally:
                self.parked -= 1

    def wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_for_parked(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.parked > 0, timeout_s)


class ArrivalsListener:
    """Wakes ``parking`` when a job of a class in ``runs()`` arrives; subscribed only while some thread is
    parked, and its subscription's confirmation wakes them too (a job put in line between their take and
    the subscription would otherwise wait for PARK_S)."""

    def __init__(self, client: redis.Redis, queue: str, runs: Callable[[], frozenset[str]], parking: Parking):
        self._client = client
        self._channel = keys.queue_arrivals(queue)
        self._runs = runs
        self._parking = parking
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._parking.wake()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._parking.wait_for_parked(LISTEN_S):
                continue
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                while not self._stopping.is_set() and self._parking.parked > 0:
                    message = pubsub.get_message(timeout=LISTEN_S)
                    if message is None:
                        continue
                    data = message["data"]
                    arrived = data.decode() if isinstance(data, bytes) else str(data)
                    if message["type"] == "subscribe" or arrived in self._runs():
                        self._parking.wake()
            except (redis.RedisError, OSError) as exc:
                log.warning("arrivals: %s; parked threads look again in at most %.0f s", exc, PARK_S)
                self._stopping.wait(LISTEN_S)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
