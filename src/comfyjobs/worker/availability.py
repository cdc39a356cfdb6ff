"""Which workflows this worker's ComfyUI can run, kept fresh for the heartbeat.

Checked when ComfyUI becomes ready (also after a restart) and again every AVAILABILITY_REFRESH_S, since
ComfyUI lists model folders anew on each `/object_info`: a model dropped in is noticed within that time.
"""

from __future__ import annotations

import logging
import threading
import time

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.doctor import WorkflowAvailability, check_registry
from comfyjobs.errors import ComfyError
from comfyjobs.manifests.registry import Registry

log = logging.getLogger(__name__)

AVAILABILITY_REFRESH_S = 60.0


class AvailabilityMonitor:
    def __init__(self, registry: Registry, client: ComfyClient) -> None:
        self._registry = registry
        self._client = client
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._result: dict[str, WorkflowAvailability] = {}

    def refresh(self) -> dict[str, WorkflowAvailability]:
        try:
            object_info = self._client.object_info()
        except (ComfyError, ValueError) as exc:
            log.warning("could not check workflows against ComfyUI: %s", exc)
            return self._result
        result = check_registry(self._registry, object_info)
        for workflow_id, availability in result.items():
            if not availability.ready:
                log.warning("workflow %s cannot run here: %s", workflow_id, availability.model_dump())
        with self._lock:
            self._result, self._checked_at = result, time.monotonic()
        return result

    def current(self, *, comfy_ready: bool) -> dict[str, WorkflowAvailability]:
        """The last result; re-checked first when it is older than AVAILABILITY_REFRESH_S."""
        if comfy_ready and time.monotonic() - self._checked_at > AVAILABILITY_REFRESH_S:
            return self.refresh()
        with self._lock:
            return self._result

    def invalidate(self) -> None:
        """ComfyUI restarted: check again at the next beat."""
        self._checked_at = float("-inf")
