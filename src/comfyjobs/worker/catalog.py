"""The catalog as a worker uses it: a job's graph is built from the version the job records (its bundle
fetched from Redis by hash once, checked against it, and kept), never from this machine's files; the
active version (what capabilities and the warm-up are about) is followed on the activation channel.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from comfyjobs import keys
from comfyjobs.backoff import DEFAULT_DELAYS_S, Backoff
from comfyjobs.catalog.bundle import short
from comfyjobs.catalog.registries import MAX_VERSIONS, Registries, Versioned
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.errors import ComfyJobsError, NoActiveCatalogError
from comfyjobs.manifests.registry import Registry

log = logging.getLogger(__name__)

LISTEN_S = 1.0  # the watch's read of the channel ends this often to ask whether to stop


class WorkerCatalog:
    def __init__(self, client: redis.Redis, queue: str, keep: int = MAX_VERSIONS) -> None:
        self._store = CatalogStore(client, queue)
        self._client = client
        self._channel = keys.catalog_activated(queue)
        # Every kept version is checked each minute (worker.capabilities): all of them stay built.
        self._registries = Registries(max(MAX_VERSIONS, keep + 8))
        self._building = threading.Lock()
        self._active: Versioned | None = None
        self._has_active = threading.Event()
        self._stopping = threading.Event()
        self._listeners: list[Callable[[Versioned], None]] = []
        self._thread = threading.Thread(target=self._watch, name="catalog-watch", daemon=True)

    def registry(self, version: str | None) -> Registry:
        """The registry of ``version`` (None: a job from before catalogs, built from the active one).
        Raises CatalogError if that version is not published (or was pruned)."""
        if version is None:
            return self.active().registry
        found = self._registries.get(version)
        if found is not None:
            return found
        with self._building:  # (two job threads asking for one new version build it once)
            found = self._registries.get(version)
            if found is None:
                found = self._registries.put(version, self._store.bundle(version).registry()).registry
        return found

    def kept(self) -> list[str]:
        """The versions published and not pruned, newest first (jobs may wait built from any of them)."""
        return [v.version for v in self._store.versions()]

    def active(self) -> Versioned:
        found = self._active
        if found is None:
            raise NoActiveCatalogError("no catalog version is active yet (`comfyjobs catalog publish`)")
        return found

    def on_switch(self, listener: Callable[[Versioned], None]) -> None:
        """``listener`` runs (in the watch thread) after each switch to another active version."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread.start()

    def wait_active(self, timeout_s: float) -> Versioned | None:
        """The active version once there is one (None after ``timeout_s``, or when stopping)."""
        self._has_active.wait(timeout_s)
        return self._active

    def stop(self) -> None:
        self._stopping.set()
        self._has_active.set()  # (a wait for the first version ends too)

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def refresh(self) -> None:
        version = self._store.active()
        if version is None or (self._active is not None and self._active.version == version):
            return
        try:
            switched = Versioned(version, self.registry(version))
        except ComfyJobsError as exc:  # (a version this release cannot read: keep the last)
            log.error("catalog %s was activated but cannot be used here: %s", short(version), exc)
            return
        self._active = switched
        self._has_active.set()
        log.info(
            "catalog: active version %s (%d workflows)", short(version), len(switched.registry.workflows)
        )
        for listener in self._listeners:
            try:
                listener(switched)
            except Exception:  # one listener's bug must not stop the others, nor the watch
                log.exception("catalog: a listener failed on the switch to %s", short(version))

    def _watch(self) -> None:
        backoff = Backoff(DEFAULT_DELAYS_S)
        while not self._stopping.is_set():
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                backoff.started()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_S)
                    if message is not None:  # the subscription's confirmation too: what came meanwhile
                        self.refresh()
            except Exception as exc:  # (Redis, or a bug: the watch must go on either way)
                delay_s = backoff.next_delay() or 1.0
                expected = isinstance(exc, redis.RedisError | OSError | ComfyJobsError)
                log.warning("catalog watch: %s; again in %.0f s", exc, delay_s, exc_info=not expected)
                self._stopping.wait(delay_s)
            finally:
                pubsub.close()
