"""POST/GET/DELETE /assets with the local backend, and the signed links that serve them."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from comfyjobs.storage.assets import ASSET_ID
from tests.media_files import noise_png, png


def _path(url: str) -> str:
    split = urlsplit(url)
    return f"{split.path}?{split.query}"


def test_upload_read_download_delete(client: TestClient) -> None:
    data = png(96, 64)
    resp = client.post("/assets", files={"file": ("photo.png", data, "image/png")})
    assert resp.status_code == 201, resp.text
    asset = resp.json()
    assert asset["id"] == asset["sha256"] == hashlib.sha256(data).hexdigest()
    assert ASSET_ID.match(asset["id"])
    assert (asset["kind"], asset["content_type"], asset["size_bytes"]) == ("image", "image/png", len(data))
    assert (asset["width"], asset["height"], asset["filename"]) == (96, 64, "photo.png")
    assert asset["url"].startswith(f"http://api.example:9000/inputs/default/{asset['id']}?expires=")
    assert asset["url_expires_at"] < asset["expires_at"]

    again = client.post("/assets", files={"file": ("copy.png", data, "application/octet-stream")}).json()
    assert again["id"] == asset["id"]  # identical bytes: one asset, stored once
    assert again["filename"] == "photo.png"
    assert again["expires_at"] >= asset["expires_at"]

    read = client.get(f"/assets/{asset['id']}")
    assert read.status_code == 200
    download = client.get(_path(read.json()["url"]))
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "image/png"

    tampered = client.get(_path(read.json()["url"]).replace("image%2Fpng", "text%2Fhtml"))
    assert tampered.status_code == 403
    assert tampered.json()["error"]["code"] == "url_signature_invalid"

    assert client.delete(f"/assets/{asset['id']}").status_code == 204
    assert client.get(f"/assets/{asset['id']}").status_code == 404
    assert client.get(_path(read.json()["url"])).status_code == 404  # the file is gone too
    assert client.delete(f"/assets/{asset['id']}").json()["error"]["code"] == "asset_not_found"


def test_any_file_is_an_asset_of_kind_file(client: TestClient) -> None:
    asset = client.post("/assets", files={"file": ("notes.txt", b"some words", "text/plain")}).json()
    assert (asset["kind"], asset["content_type"], asset["width"]) == ("file", "text/plain", None)


def test_refusals_name_the_reason(settings: Settings) -> None:
    small = settings.model_copy(update={"input_max_bytes": 2048, "input_max_pixels": 1000})
    with TestClient(create_app(small)) as client:
        big = client.post("/assets", files={"file": ("big.bin", b"x" * 4096, "application/octet-stream")})
        assert big.status_code == 413
        assert "INPUT_MAX_BYTES (2048 bytes)" in big.json()["error"]["message"]
        bomb = client.post("/assets", files={"file": ("wide.png", png(100, 20), "image/png")})
        assert bomb.status_code == 422
        assert bomb.json()["error"]["fields"] == [
            {"field": "file", "reason": "100x20 is 2000 pixels, over INPUT_MAX_PIXELS (1000)"}
        ]
        broken = client.post("/assets", files={"file": ("cut.png", noise_png(30, 30)[:1000], "image/png")})
        assert broken.status_code == 422
        assert "not a readable PNG" in broken.json()["error"]["message"]
        missing = client.post("/assets", data={"other": "x"})
        assert missing.status_code == 422
        assert missing.json()["error"]["fields"][0]["field"] == "file"
        assert client.get("/assets/not-an-id").status_code == 404


def test_files_that_could_run_as_pages_are_downloads(client: TestClient) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    asset = client.post("/assets", files={"file": ("x.html", page, "text/html")}).json()
    served = client.get(_path(asset["url"]))
    assert served.status_code == 200
    assert served.headers["content-disposition"].startswith("attachment;")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "sandbox"
    picture = client.post("/assets", files={"file": ("p.png", png(8, 8), "image/png")}).json()
    assert client.get(_path(picture["url"])).headers["content-disposition"].startswith("inline;")
