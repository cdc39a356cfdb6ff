"""Deletes stored objects whose time is up: outputs after OUTPUT_TTL_S, input assets after ASSET_TTL_S.

Whoever stores an object (or renews it) scores its key in one sorted set (``keys.OBJECT_EXPIRY``) with
the second it expires: the API for assets (storage.assets), a worker for a job's outputs prefix, as the
job starts and ends (jobs.worker_store). A sweep claims what is due in one Lua call (read and removed
together, so several API processes never delete the same thing twice, and no leader is needed), then
deletes it. A deletion that fails is put back for the next sweep. Nothing here lists the bucket or the
disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis
import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from comfyjobs import keys
from comfyjobs.errors import StorageError
from comfyjobs.storage.objects import ObjectStore

log = logging.getLogger(__name__)

SWEEP_BATCH = 100
RETRY_AFTER_S = 300.0

# KEYS[1] expiry set; ARGV[1] now, ARGV[2] batch size
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


class RetentionSweeper:
    def __init__(self, client: aioredis.Redis, store: ObjectStore, interval_s: float) -> None:
        self._redis = client
        self._store = store
        self._interval_s = interval_s
        self._claim = client.register_script(_CLAIM_DUE)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def sweep(self, now: float | None = None) -> list[str]:
        """Deletes everything due by ``now``; returns the keys and prefixes deleted."""
        deleted: list[str] = []
        while True:
            due = [
                k.decode() if isinstance(k, bytes) else str(k)
                for k in await self._claim(keys=[keys.OBJECT_EXPIRY], args=[now or time.time(), SWEEP_BATCH])
            ]
            for key in due:
                try:
                    count = await run_in_threadpool(self._store.delete, key)
                    log.info("retention: deleted %s (%d object(s))", key, count)
                    deleted.append(key)
                except StorageError as exc:
                    log.warning("retention: %s not deleted (%s); again later", key, exc)
                    await self._redis.zadd(keys.OBJECT_EXPIRY, {key: time.time() + RETRY_AFTER_S})
            if len(due) < SWEEP_BATCH:
                return deleted

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except redis.RedisError as exc:
                log.warning("retention sweep skipped: Redis is unavailable: %s", exc)
            except Exception:  # the sweep must outlive any one odd entry
                log.exception("retention sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
