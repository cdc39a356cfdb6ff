"""Publishing the catalog of this machine's folders (MANIFEST_DIR, WORKFLOW_DIR)."""

from __future__ import annotations

import logging
import socket

from comfyjobs.catalog.bundle import read_bundle, short
from comfyjobs.catalog.store import CatalogStore, Published
from comfyjobs.settings import Settings

log = logging.getLogger(__name__)


def publish_folders(store: CatalogStore, settings: Settings, *, activate: bool) -> Published:
    """Publishes the folders' bundle (ManifestError, naming every problem, unless it passes `comfyjobs
    check`), and activates it if asked."""
    bundle, registry = read_bundle(settings.manifest_dir, settings.workflow_dir)
    source = f"{socket.gethostname()}:{settings.manifest_dir.resolve()}"
    published = store.publish(
        bundle,
        source=source,
        keep=settings.catalog_keep,
        job_ttl_s=settings.job_ttl_s,
        workflows=sorted(registry.workflows),
    )
    if activate:
        store.activate(published.version)
    return published


def ensure_active(store: CatalogStore, settings: Settings) -> str:
    """The active version; with none yet, this machine's folders are published and activated first (a
    single box, or the first process of a fleet, needs no separate step)."""
    version = store.active()
    if version is not None:
        return version
    published = publish_folders(store, settings, activate=True)
    log.info("catalog: none was active; published and activated %s from %s", short(published.version),
             settings.manifest_dir)  # fmt: skip
    return published.version
