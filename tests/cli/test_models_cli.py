"""`comfyjobs models report` and `models prune`: the cache against its cap, LRU, never a file in use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyjobs.cli.models import report, run_models_prune
from comfyjobs.settings import Settings


def _entry(root: Path, key: str, size: int, used_ns: int) -> None:
    (root / key).mkdir(parents=True)
    (root / key / f"{key}.safetensors").write_bytes(b"x" * size)
    (root / key / ".used").touch()
    os.utime(root / key / ".used", ns=(used_ns, used_ns))


def test_prune_removes_the_least_recently_used_past_the_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    _entry(cache, "old", 600, 1_000)
    _entry(cache, "new", 600, 2_000)
    settings = Settings(
        _env_file=None, model_cache_dir=cache, model_cache_max_gb=1000 / 1024**3,
        model_dir=tmp_path / "models",
        redis_url="redis://127.0.0.1:1", manifest_dir=tmp_path / "none", workflow_dir=tmp_path / "none",
    )  # fmt: skip
    assert run_models_prune(settings, dry_run=True) == 0
    assert (cache / "old").is_dir() and "would remove old.safetensors" in capsys.readouterr().out
    assert run_models_prune(settings, dry_run=False) == 0
    assert not (cache / "old").exists() and (cache / "new").is_dir()
    data = report(settings)
    assert [f["name"] for f in data["cache"]["files"]] == ["new.safetensors"]
    assert data["cache"]["size_bytes"] == 600
