"""When to restart a process that exited on its own, and when to stop trying (and the delay tables of
everything else that tries again: ``capped``, ``exponential``).

One policy for everything that restarts a crashed process: `comfyjobs up` (Redis, workers, the API) and a
worker (its ComfyUI). Delays grow with each consecutive failure up to a cap; a process that then stays up
for ``stable_s`` has recovered, and its next failure starts again from the first delay. A policy with
``give_up_after`` set gives up after that many consecutive failures (each within ``stable_s`` of its
start), for a process that is broken rather than unlucky; without it, restarts go on for ever.

Usage::

    backoff = Backoff()
    start(); backoff.started()
    ...  # it exits
    delay_s = backoff.next_delay()  # None: give up
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

DEFAULT_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
DEFAULT_STABLE_S = 60.0


def capped(delays_s: Sequence[float], cap_s: float) -> tuple[float, ...]:
    """``delays_s`` with none above ``cap_s`` (a smaller cap gives shorter waits all along)."""
    return tuple(min(d, cap_s) for d in delays_s)


def exponential(first_s: float, factor: float, count: int) -> tuple[float, ...]:
    """``count`` delays: ``first_s``, then each ``factor`` times the one before (retries spread out)."""
    return tuple(first_s * factor**i for i in range(count))


class Backoff:
    """Restart delays for one process. Not thread-safe: one thread restarts a given process."""

    def __init__(
        self,
        delays_s: Sequence[float] = DEFAULT_DELAYS_S,
        *,
        stable_s: float = DEFAULT_STABLE_S,
        give_up_after: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not delays_s or min(delays_s) < 0:
            raise ValueError("delays_s: at least one delay, none negative")
        if give_up_after is not None and give_up_after < 1:
            raise ValueError("give_up_after: at least 1 (or None: never give up)")
        self.delays_s = tuple(delays_s)
        self.stable_s = stable_s
        self.give_up_after = give_up_after
        self._clock = clock
        self._started_at: float | None = None
        self.failures = 0  # consecutive, each within stable_s of its start

    def started(self) -> None:
        """The process has just been (re)started."""
        self._started_at = self._clock()

    def next_delay(self) -> float | None:
        """The process has exited (or could not be started at all): seconds to wait before the next
        start, or None when the policy gives up."""
        if self._started_at is not None and self._clock() - self._started_at >= self.stable_s:
            self.failures = 0  # it had recovered: this failure is a first one
        self._started_at = None  # a start that fails outright counts as a fast failure
        self.failures += 1
        if self.give_up_after is not None and self.failures >= self.give_up_after:
            return None
        return self.delays_s[min(self.failures, len(self.delays_s)) - 1]

    def reset(self) -> None:
        self.failures = 0
        self._started_at = None
