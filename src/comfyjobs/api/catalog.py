"""The API process's view of the catalog: the active version's registry, switched when another version is
activated, and any version's registry for jobs built from it.

A request takes ``current`` once and uses that version throughout (validation, the graph, the record), so
a switch in the middle of it changes nothing for it, and no request fails for one. The switch comes from
the activation channel (keys.catalog_activated): on each announcement, and on each (re)subscription (so
nothing activated while unsubscribed is missed), the active key is read and, if it names another version,
that version's registry is built off the loop and swapped in, then ``on_switch`` runs (the typed routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.backoff import DEFAULT_DELAYS_S, Backoff
from comfyjobs.catalog.bundle import short
from comfyjobs.catalog.registries import Registries, Versioned
from comfyjobs.catalog.store import AsyncCatalogReads
from comfyjobs.errors import ComfyJobsError
from comfyjobs.manifests.registry import Registry

log = logging.getLogger(__name__)

LISTEN_S = 5.0  # the watch's read of the channel ends this often to ask whether to stop


class CatalogView:
    def __init__(
        self,
        reads: AsyncCatalogReads,
        subscriber: aioredis.Redis,
        queue: str,
        initial: Versioned,
        on_switch: Callable[[Versioned], None],
    ) -> None:
        self._reads = reads
        self._subscriber = subscriber
        self._channel = keys.catalog_activated(queue)
        self._registries = Registries()
        self._registries.put(initial.version, initial.registry)
        self.current = initial
        self._on_switch = on_switch
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._switching = asyncio.Lock()

    async def registry_of(self, version: str) -> Registry:
        """The registry of ``version``, built once; CatalogError if it is not published."""
        found = self._registries.get(version)
        if found is not None:
            return found
        bundle = await self._reads.bundle(version)
        registry = await asyncio.to_thread(bundle.registry)
        return self._registries.put(version, registry).registry

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="catalog-watch")

    async def stop(self) -> None:
        """Ends the watch now: it holds nothing a cancellation could leave half done."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        """Switches to the active version if it is another one than ``current``."""
        async with self._switching:
            version = await self._reads.active()
            if version is None or version == self.current.version:
                return
            try:
                registry = await self.registry_of(version)
            except ComfyJobsError as exc:  # (a version this release cannot read: keep serving the last)
                log.error("catalog %s was activated but cannot be used here: %s", short(version), exc)
                return
            before, self.current = self.current, Versioned(version, registry)
            log.info("catalog: switched from %s to %s", short(before.version), short(version))
            try:
                self._on_switch(self.current)
            except Exception:  # (the typed routes: requests still validate against the new version)
                log.exception("catalog: the switch to %s could not update the typed routes", short(version))

    async def _watch(self) -> None:
        backoff = Backoff(DEFAULT_DELAYS_S)
        while not self._stopping.is_set():
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                backoff.started()
                while not self._stopping.is_set():
                    message = await pubsub.get_message(timeout=LISTEN_S)
                    if message is not None:  # the subscription's confirmation too: what came meanwhile
                        await self.refresh()
            except Exception as exc:  # (Redis, or a bug: the watch must go on either way)
                delay_s = backoff.next_delay() or 1.0
                log.warning(
                    "catalog watch: %s; again in %.0f s",
                    exc,
                    delay_s,
                    exc_info=not isinstance(exc, redis.RedisError | OSError | ComfyJobsError),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay_s)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
