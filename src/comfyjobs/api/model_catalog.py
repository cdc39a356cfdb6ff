"""The model files a request may name (``choices_from``), as the API knows them.

With the ``local`` backend the API shares the workers' MODEL_DIR and reads it (``DiskModels``); with
``s3`` the API and the workers share nothing but Redis and the bucket, so it uses what the live workers
report in their heartbeats (``ReportedModels``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from comfyjobs.api.availability import FleetView
from comfyjobs.storage.models import DiskModels, ModelLists


class ModelCatalog(Protocol):
    async def lists(self, folders: Iterable[str]) -> ModelLists: ...


class ReportedModels:
    """The union of what the live workers have: a job may go to any of them, so a file any worker has
    is accepted (GET /workflows shows which workflows each can run)."""

    def __init__(self, fleet: FleetView) -> None:
        self._fleet = fleet

    async def lists(self, folders: Iterable[str]) -> ModelLists:
        wanted = set(folders)
        if not wanted:
            return {}
        found: dict[str, set[str]] = {folder: set() for folder in wanted}
        beats = await self._fleet.beats()
        if not beats:
            return {}  # unknown until a worker reports: requests naming a model are let through to wait
        for beat in beats:
            for folder, names in beat.models.items():
                if folder in found:
                    found[folder].update(names)
        return {folder: sorted(names) for folder, names in found.items()}


__all__ = ["DiskModels", "ModelCatalog", "ReportedModels"]
