"""Registries of catalog versions, built once per process and kept while used (least recently used go)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from comfyjobs.manifests.registry import Registry

MAX_VERSIONS = 16  # a version is a few hundred kB of request models; jobs rarely span more than a few


@dataclass(frozen=True)
class Versioned:
    """A registry and the catalog version it was built from."""

    version: str
    registry: Registry


class Registries:
    """Thread-safe; a lookup renews the version's place."""

    def __init__(self, max_versions: int = MAX_VERSIONS) -> None:
        self._max = max_versions
        self._lock = threading.Lock()
        self._built: OrderedDict[str, Registry] = OrderedDict()

    def get(self, version: str) -> Registry | None:
        with self._lock:
            found = self._built.get(version)
            if found is not None:
                self._built.move_to_end(version)
            return found

    def put(self, version: str, registry: Registry) -> Versioned:
        with self._lock:
            self._built[version] = registry
            self._built.move_to_end(version)
            while len(self._built) > self._max:
                self._built.popitem(last=False)
        return Versioned(version, registry)
