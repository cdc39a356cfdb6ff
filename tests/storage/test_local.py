"""The local object store and its signed links."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from comfyjobs.errors import ConfigError, ObjectNotFoundError, UrlSignatureError
from comfyjobs.settings import Settings
from comfyjobs.storage.local import LocalObjectStore, link_path
from comfyjobs.storage.signing import KEY_FILE, UrlSigner


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32), "http://api.example:9000/")


def _parts(url: str) -> tuple[str, int, str, str]:
    split = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    return split.path, int(query["expires"]), query["type"], query["sig"]


def test_put_open_delete(store: LocalObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"abc")
    store.put_file("outputs/t1/a.png", source, "image/png")
    store.put_bytes("outputs/t1/b.txt", b"hello", "text/plain")
    assert not source.exists()  # moved, not copied
    assert store.exists("outputs/t1/a.png")
    with store.open("outputs/t1/b.txt") as fh:
        assert fh.read() == b"hello"
    assert store.delete("outputs/t1/") == 2
    assert not store.exists("outputs/t1/a.png")
    assert store.delete("outputs/t1/") == 0
    with pytest.raises(ObjectNotFoundError):
        store.open("outputs/t1/a.png")


@pytest.mark.parametrize("key", ["../etc/passwd", "outputs/../../x", "outputs//x", "outputs/.hidden", "/abs"])
def test_keys_cannot_leave_the_root(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.put_bytes(key, b"x", "text/plain")
    assert not store.exists(key)


def test_symlinks_are_not_served(store: LocalObjectStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    folder = store.root / "outputs" / "t2"
    folder.mkdir(parents=True)
    (folder / "link.txt").symlink_to(secret)
    assert not store.exists("outputs/t2/link.txt")
    with pytest.raises(ObjectNotFoundError):
        store.file("outputs/t2/link.txt")


def test_links_verify_until_they_expire(store: LocalObjectStore) -> None:
    link = store.link("outputs/t3/a b.png", content_type="image/png", filename="a b.png", ttl_s=60)
    assert link.url.startswith("http://api.example:9000/outputs/t3/a%20b.png?")
    path, expires, ctype, sig = _parts(link.url)
    assert path == link_path("outputs/t3/a b.png")
    assert abs(expires - (time.time() + 60)) < 5
    store.verify("outputs/t3/a b.png", expires=expires, content_type=ctype, sig=sig)


def test_altered_expired_and_unsigned_links_are_refused(store: LocalObjectStore) -> None:
    link = store.link("outputs/t4/a.png", content_type="image/png", filename="a.png", ttl_s=60)
    _, expires, ctype, sig = _parts(link.url)
    for key, exp, typ, signature in [
        ("outputs/t4/b.png", expires, ctype, sig),  # another file
        ("outputs/t4/a.png", expires + 3600, ctype, sig),  # extended
        ("outputs/t4/a.png", expires, "text/html", sig),  # another type served
        ("outputs/t4/a.png", expires, ctype, sig[:-2] + "AA"),  # forged
    ]:
        with pytest.raises(UrlSignatureError, match="does not match"):
            store.verify(key, expires=exp, content_type=typ, sig=signature)
    signer = UrlSigner(b"k" * 32)
    past = int(time.time()) - 1
    old = parse_qs(signer.query(link_path("outputs/t4/a.png"), expires=past, content_type="image/png"))
    with pytest.raises(UrlSignatureError, match="expired"):
        store.verify("outputs/t4/a.png", expires=past, content_type="image/png", sig=old["sig"][0])
    with pytest.raises(UrlSignatureError, match="not signed"):
        store.verify("outputs/t4/a.png", expires=None, content_type=None, sig=None)


def test_signing_key_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path)
    first = UrlSigner.from_settings(settings).query("/x", expires=1, content_type="a/b")
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert UrlSigner.from_settings(settings).query("/x", expires=1, content_type="a/b") == first
    other = Settings.load(data_dir=tmp_path, url_signing_key="another-key-of-32-characters-long")
    assert UrlSigner.from_settings(other).query("/x", expires=1, content_type="a/b") != first
    with pytest.raises(ConfigError, match="at least 16"):
        UrlSigner(b"short")
