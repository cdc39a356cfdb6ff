"""Model folders on disk: a file added to a folder or one sub-folder down changes the folders' stamp (the
worker re-checks what it can run at its next heartbeat); files outside any folder do not."""

from __future__ import annotations

import os
from pathlib import Path

from comfyjobs.storage.models import folders_stamp, list_model_folder


def _bump_back(path: Path) -> None:
    """A folder's mtime set back one second, so a change within the same clock tick still tells."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 1_000_000_000))


def test_a_model_added_or_removed_changes_the_stamp(tmp_path: Path) -> None:
    models, shared = tmp_path / "models", tmp_path / "shared"
    (models / "checkpoints" / "on-demand").mkdir(parents=True)
    (shared / "loras").mkdir(parents=True)
    for folder in (models / "checkpoints", models / "checkpoints" / "on-demand", shared / "loras"):
        _bump_back(folder)
    before = folders_stamp(models, None, shared)

    (models / "checkpoints" / "on-demand" / "abc-x.safetensors").write_bytes(b"x")
    linked = folders_stamp(models, None, shared)
    assert linked != before
    (shared / "loras" / "style.safetensors").write_bytes(b"y")
    assert folders_stamp(models, None, shared) != linked
    assert list_model_folder(models, "checkpoints") == ["on-demand/abc-x.safetensors"]

    unchanged = folders_stamp(models, None, shared)
    (tmp_path / "elsewhere.safetensors").write_bytes(b"z")
    assert folders_stamp(models, None, shared) == unchanged
    assert folders_stamp(tmp_path / "missing") == ()
