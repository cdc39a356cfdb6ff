"""A value this API process reads from Redis at most once per ``max_age_s``, however many requests ask:
concurrent readers of a stale value wait for one read instead of each starting its own (a thousand
events streams waking on one change must not take a thousand pool connections for the same hash)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Refreshed(Generic[T]):
    def __init__(self, load: Callable[[], Awaitable[T]], max_age_s: float) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._value: T | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._value is not None and time.monotonic() - self._read_at < self._max_age_s

    async def get(self) -> T:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():  # another reader may have refreshed it while we waited
                    self._value = await self._load()
                    self._read_at = time.monotonic()
        assert self._value is not None
        return self._value
