from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from comfyjobs.cli import exit_codes
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


def test_s3_keys_as_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together"):
        Settings.load(s3_access_key_id="AKIA1")
    both = Settings.load(s3_access_key_id="AKIA1", s3_secret_access_key="s3cr3t")
    assert both.s3_secret_access_key is not None and "s3cr3t" not in repr(both)


# --- Settings that fail fast: unknown names, unusable URLs, keys that name no key ---------------------


def _problems(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.load(**overrides)
    return caught.value.message


def test_an_unknown_key_in_env_file_is_refused_with_the_nearest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("# a comment\nMAX_QUEUE_DEPT=5\nLOG_LEVEL=DEBUG\n")
    message = _problems()
    assert "MAX_QUEUE_DEPT (in .env): not a setting; did you mean MAX_QUEUE_DEPTH?" in message
    assert "LOG_LEVEL" not in message

    # Every key of a .env file is ours: one that resembles nothing is refused too, whatever its case.
    (tmp_path / ".env").write_text(
        "export redis_url=redis://127.0.0.1:6379/0\nSOMETHING_ELSE=1\nworkr_heartbeat_s=3\n"
    )
    message = _problems()
    assert "SOMETHING_ELSE (in .env): not a setting (.env.example lists every setting)" in message
    assert "workr_heartbeat_s (in .env): not a setting; did you mean WORKER_HEARTBEAT_S?" in message
    assert "redis_url (in" not in message

    # Another file, named as the caller named it.
    other = tmp_path / "deploy.env"
    other.write_text("S3_BUCKETS=b\n")
    assert f"S3_BUCKETS (in {other}): not a setting; did you mean S3_BUCKET?" in _problems(_env_file=other)
    (tmp_path / ".env").write_text("LOG_LEVEL=debug\n")
    assert Settings.load().log_level == "DEBUG"


def test_the_environment_is_checked_for_names_that_look_like_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_QUEUE_DEPT", "5")  # a near miss
    monkeypatch.setenv("REDIS_HOST", "10.0.0.1")  # one of our groups' prefixes
    monkeypatch.setenv("API_KEY", "k")  # a near miss that would otherwise leave the API open
    message = _problems()
    assert "MAX_QUEUE_DEPT (in the environment): not a setting; did you mean MAX_QUEUE_DEPTH?" in message
    assert "REDIS_HOST (in the environment): not a setting; did you mean REDIS_URL?" in message
    assert "API_KEY (in the environment): not a setting; did you mean API_KEYS?" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AWS_ACCESS_KEY_ID", "testing"),  # boto3's, as the S3 tests set them
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", "http://minio:9000"),  # as near to S3_ENDPOINT_URL as a typo, but boto3's
        ("AWS_REGION", "us-east-1"),
        ("HF_HOME", "/cache/hf"),  # huggingface_hub's, beside our HF_TOKEN
        ("HF_TOKEN_PATH", "/run/secrets/hf"),
        ("MAX_JOBS", "4"),  # extension builds (custom nodes)
        ("JOB_NAME", "nightly"),  # Jenkins
        ("COMFYJOBS_SERVER", "http://127.0.0.1:8000"),  # the clients'
        ("COMFYJOBS_API_KEY", "k"),
        ("CI", "true"),
        ("CHAOS_SEED", "1"),
        ("CUDA_VISIBLE_DEVICES", "0"),
        ("REDIS_SERVICE_HOST", "10.0.0.7"),  # Kubernetes, for a service named `redis`
        ("REDIS_PORT", "tcp://10.0.0.7:6379"),
        ("REDIS_PORT_6379_TCP_ADDR", "10.0.0.7"),
        ("COMFYUI_DIR", "/opt/ComfyUI"),  # settings, of course, in any case
        ("redis_url", "redis://127.0.0.1:6379/0"),
    ],
)
def test_other_tools_variables_pass(
    name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    Settings.load()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://nope", "scheme 'http' is not redis://, rediss:// or unix://"),
        ("127.0.0.1:6379", "not a URL; expected redis://HOST:PORT/DB"),
        ("localhost", "not a URL"),
        ("redis://", "redis:// names no host"),
        ("rediss://:secret@/0", "rediss:// names no host"),
        ("redis://127.0.0.1:99999/0", "the port is not a number in 1-65535"),
        ("redis://127.0.0.1:port/0", "the port is not a number in 1-65535"),
        ("redis://127.0.0.1:6379/zero", "the database (the URL's path) must be a number"),
        ("unix://tmp/redis.sock", "unix:// needs an absolute socket path"),
        ("unix://", "unix:// needs an absolute socket path"),
    ],
)
def test_an_unusable_redis_url_is_refused_at_load(url: str, reason: str) -> None:
    message = _problems(redis_url=url)
    assert f"REDIS_URL: {reason}" in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis",
        "rediss://user:p%40ss@cache.example.com:6380/2",
        "redis://[::1]:6379",
        "unix:///run/redis/redis.sock",
        "unix://:secret@/run/redis/redis.sock?db=1",
    ],
)
def test_usable_redis_urls_pass(url: str) -> None:
    assert Settings.load(redis_url=url).require_redis_url() == url


def test_a_blank_redis_url_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "  ")
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        Settings.load().require_redis_url()


def test_public_and_s3_endpoint_urls_must_be_http() -> None:
    for bad in ("ftp://files.example.com", "minio:9000", "http://"):
        assert "PUBLIC_URL: " in _problems(public_url=bad)
        assert "S3_ENDPOINT_URL: " in _problems(s3_endpoint_url=bad)
    assert str(Settings.load(s3_endpoint_url="http://minio:9000").s3_endpoint_url) == "http://minio:9000/"


def test_api_keys_that_name_no_key_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for blank in (" , ", "", ",,", "  "):
        monkeypatch.setenv("API_KEYS", blank)
        assert "API_KEYS is set but names no key" in _problems()
    monkeypatch.setenv("API_KEYS", "k-one, ,k-two,")
    assert Settings.load().accepted_api_keys == {"k-one", "k-two"}
    monkeypatch.setenv("API_KEYS", "alice:k-alice,bob:k-bob")  # tenant:key pairs pass as they are
    assert Settings.load().api_keys is not None
    monkeypatch.delenv("API_KEYS")
    assert Settings.load().accepted_api_keys == frozenset()


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("QUEUE_NAMES=q\n")
    monkeypatch.setenv("COMFYUI_BASE_PROT", "8188")
    monkeypatch.setenv("API_PORT", "not-a-port")
    message = _problems()
    assert message.startswith("invalid settings: ")
    for name in ("QUEUE_NAMES (in .env)", "COMFYUI_BASE_PROT (in the environment)", "API_PORT: "):
        assert name in message


def test_comfyjobs_check_stops_on_a_misspelt_setting(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_QUEUE_DEPT=10\n")
    env = {k: v for k, v in os.environ.items() if k.upper() != "REDIS_URL"}
    env["REDIS_URL"] = "http://nope"
    done = subprocess.run(
        [sys.executable, "-m", "comfyjobs", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == exit_codes.CONFIG
    assert done.stderr.startswith("comfyjobs: invalid settings: ")
    assert "MAX_QUEUE_DEPT (in .env): not a setting; did you mean MAX_QUEUE_DEPTH?" in done.stderr
    assert "REDIS_URL: scheme 'http' is not redis://, rediss:// or unix://" in done.stderr
    assert "Traceback" not in done.stderr
