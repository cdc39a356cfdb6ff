"""The S3 object store against moto's standalone server (the S3 wire protocol over HTTP; boto3 as is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from comfyjobs.errors import ConfigError, ObjectNotFoundError
from comfyjobs.settings import Settings
from comfyjobs.storage.objects import open_object_store
from comfyjobs.storage.s3 import S3ObjectStore
from tests.s3 import S3Endpoint


@pytest.fixture
def store(s3_endpoint: S3Endpoint) -> S3ObjectStore:
    return S3ObjectStore(s3_endpoint.client(), s3_endpoint.new_bucket(), prefix="svc/")  # type: ignore[arg-type]


def test_put_open_link_delete(store: S3ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"\x89PNG not really")
    store.put_file("outputs/t1/a.png", source, "image/png")
    store.put_bytes("outputs/t1/b.txt", b"hello", "text/plain")
    store.put_bytes("outputs/t2/c.txt", b"other task", "text/plain")
    assert store.exists("outputs/t1/a.png")
    assert not store.exists("outputs/t1/zzz.png")
    with store.open("outputs/t1/b.txt") as fh:
        assert fh.read() == b"hello"

    link = store.link("outputs/t1/a.png", content_type="image/png", filename="a.png", ttl_s=600)
    assert "/svc/outputs/t1/a.png" in link.url and "Signature=" in link.url
    resp = requests.get(link.url, timeout=10)  # no credentials: the signature is the credential
    assert resp.status_code == 200
    assert resp.content == b"\x89PNG not really"
    assert resp.headers["content-type"] == "image/png"

    assert store.delete("outputs/t1/") == 2
    assert not store.exists("outputs/t1/b.txt")
    assert store.exists("outputs/t2/c.txt")
    with pytest.raises(ObjectNotFoundError):
        store.open("outputs/t1/b.txt").__enter__()


def test_from_settings_fails_fast(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_endpoint.env("x").items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    base = {"storage_backend": "s3", "s3_endpoint_url": s3_endpoint.url, "s3_region": "us-east-1"}
    with pytest.raises(ConfigError, match="'no-such-bucket' does not exist"):
        open_object_store(Settings.load(s3_bucket="no-such-bucket", **base))
    bucket = s3_endpoint.new_bucket()
    store = open_object_store(Settings.load(s3_bucket=bucket, s3_prefix="p/", **base))
    store.put_bytes("inputs/abc", b"x", "application/octet-stream")
    assert store.exists("inputs/abc")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="no AWS credentials"):
        open_object_store(Settings.load(s3_bucket=bucket, **base))
