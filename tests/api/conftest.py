"""The API against a real Redis, with no worker: what is accepted stays queued where we can inspect it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from tests.conftest import REPO


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "smoke-sd15.safetensors").write_bytes(b"stand-in")
    return Settings.load(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        manifest_dir=REPO / "manifests",
        workflow_dir=REPO / "workflows",
        queue_name=f"test-{uuid.uuid4().hex[:8]}",  # a queue no worker consumes
        public_url="http://api.example:9000/",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
