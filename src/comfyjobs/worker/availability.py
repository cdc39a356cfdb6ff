"""Which workflows this worker can run, kept fresh for the heartbeat and the take.

Checked when ComfyUI becomes ready (also after a restart), when another catalog version is activated, when
the model folders' listing changed (at the heartbeat; ComfyUI lists model folders anew on each
`/object_info`), after a model download, and again every AVAILABILITY_REFRESH_S.
The `/object_info` itself is published in Redis under its digest (named by the heartbeat), so the API
can check a raw graph (the v2 API) against what this worker's ComfyUI has before queueing it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable

import redis

from comfyjobs import keys
from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.doctor import WorkflowAvailability
from comfyjobs.errors import ComfyError
from comfyjobs.worker.capabilities import Capabilities, Fetchable, capabilities
from comfyjobs.worker.catalog import WorkerCatalog

log = logging.getLogger(__name__)

AVAILABILITY_REFRESH_S = 60.0
OBJECT_INFO_TTL_S = 86400  # renewed at each check; a digest no worker has named for a day goes


class AvailabilityMonitor:
    """Checks this worker's capabilities (worker.capabilities) and keeps them for the heartbeat and the
    take; ``on_change`` runs when the classes it can run changed (parked job threads look again)."""

    def __init__(
        self,
        catalog: WorkerCatalog,
        labels: frozenset[str],
        client: ComfyClient,
        redis_client: redis.Redis,
        on_change: Callable[[], None] = lambda: None,
        fetchable: Fetchable = lambda _model: False,
        on_checked: Callable[[], object] = lambda: None,
    ) -> None:
        self._fetchable = fetchable
        self._on_checked = on_checked  # after each check (the models on disk are looked at again)
        self._folders_seen: object = None
        self._catalog = catalog
        self._labels = labels
        self._client = client
        self._redis = redis_client
        self._on_change = on_change
        self.object_info_digest: str | None = None
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._result: dict[str, WorkflowAvailability] = {}
        self.capabilities = Capabilities()  # (replaced whole: readers need no lock)

    def refresh(self) -> dict[str, WorkflowAvailability]:
        try:
            object_info = self._client.object_info()
        except (ComfyError, ValueError) as exc:
            log.warning("could not check workflows against ComfyUI: %s", exc)
            return self._result
        self._publish(object_info)
        found, result = capabilities(self._catalog, object_info, self._labels, self._fetchable)
        for workflow_id, availability in result.items():
            if not availability.ready:
                log.warning("workflow %s cannot run here: %s", workflow_id, availability.model_dump())
        with self._lock:
            changed = found.runs != self.capabilities.runs
            self._result, self._checked_at, self.capabilities = result, time.monotonic(), found
        self._on_checked()
        if changed:
            self._on_change()
        return result

    def _publish(self, object_info: dict[str, object]) -> None:
        text = json.dumps(object_info, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        key = keys.object_info(digest)
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(key, text, ex=OBJECT_INFO_TTL_S, nx=True)
                pipe.expire(key, OBJECT_INFO_TTL_S)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not publish ComfyUI's object_info: %s", exc)
            return
        self.object_info_digest = digest

    def current(self, *, comfy_ready: bool, folders: object = None) -> dict[str, WorkflowAvailability]:
        """The last result; re-checked first when it is older than AVAILABILITY_REFRESH_S, or when the
        model ``folders``' listing (the heartbeat's) changed since the last call: a model downloaded or
        dropped in is noticed at the next beat."""
        moved, self._folders_seen = folders != self._folders_seen, folders
        if comfy_ready and (moved or time.monotonic() - self._checked_at > AVAILABILITY_REFRESH_S):
            return self.refresh()
        with self._lock:
            return self._result

    def invalidate(self) -> None:
        """ComfyUI restarted (or another catalog version is active): check again at the next beat."""
        self._checked_at = float("-inf")
