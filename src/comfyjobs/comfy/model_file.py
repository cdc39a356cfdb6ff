"""Writing a model file where a running ComfyUI may be listing its folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from comfyjobs.errors import ConfigError


@contextmanager
def placing_model_file(path: Path, what: str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a clean exit it becomes ``path`` in one rename,
    readable by all (ComfyUI lists models by name and must never see a half-written one). File-system
    failures become a ConfigError saying ``what`` could not be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {what} at {path}: {exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp made it private; a model is for whoever runs ComfyUI to read
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"writing {what} at {path} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
