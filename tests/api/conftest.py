"""The API against a real Redis, with no worker: what is accepted stays queued where we can inspect it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from comfyjobs.api.app import create_app
from comfyjobs.jobs.worker_store import JobStore
from comfyjobs.settings import Settings
from tests.conftest import REPO
from tests.support import served, worker_store


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


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    """The app with API keys k-one and k-two."""
    keyed_settings = settings.model_copy(update={"api_keys": Settings.load(api_keys="k-one, k-two").api_keys})
    with TestClient(create_app(keyed_settings)) as test_client:
        yield test_client


@dataclass
class LiveApi:
    """The app served by a real uvicorn on a free port (streams need a real server, not TestClient),
    and the worker-side store, to move jobs along as a worker would."""

    url: str
    settings: Settings
    store: JobStore


@pytest.fixture
def live_api(settings: Settings, redis_client: redis.Redis) -> Iterator[LiveApi]:
    settings = settings.model_copy(update={"sse_heartbeat_s": 0.2})
    with served(create_app(settings)) as url:
        yield LiveApi(url=url, settings=settings, store=worker_store(redis_client, settings))
