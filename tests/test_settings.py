from __future__ import annotations

import re
from pathlib import Path

import pytest

from comfyjobs.errors import ConfigError
from comfyjobs.settings import Settings
from tests.conftest import REPO


def test_env_example_documents_every_setting() -> None:
    text = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "not-a-port")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert "API_PORT" in caught.value.message
    assert "LOG_LEVEL" in caught.value.message


def test_public_url_defaults_to_the_api_address() -> None:
    assert Settings.load(api_host="0.0.0.0", api_port=9001).public_base_url == "http://127.0.0.1:9001"
    assert Settings.load(public_url="https://x.example/base/").public_base_url == "https://x.example/base"


def test_api_and_worker_need_a_redis_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.load(redis_url=None).require_redis_url()


def test_storage_and_allowlist_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="STORAGE_BACKEND=s3 needs S3_BUCKET"):
        Settings.load(storage_backend="s3")
    with pytest.raises(ConfigError, match=r"INPUT_URL_ALLOWLIST: .*'10.0.0.0/33'"):
        Settings.load(input_url_allowlist="minio.internal, 10.0.0.0/33")
    allowed = Settings.load(input_url_allowlist=" minio.internal , 10.0.0.0/8 ,")
    assert allowed.url_allowlist == ["minio.internal", "10.0.0.0/8"]
