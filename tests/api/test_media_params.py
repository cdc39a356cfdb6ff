"""Media parameters are resolved before a job is accepted: asset ids, data: URLs and http(s) URLs become
stored assets the record points at, and anything else is a 422 naming the parameter."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from fastapi.testclient import TestClient

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from tests.media_files import mask_png, png
from tests.support import worker_store

IMG2IMG = {"workflow_id": "img2img", "params": {"prompt": "a fox"}}


def submit(client: TestClient, **params: object) -> dict[str, object]:
    resp = client.post("/generate", json={**IMG2IMG, "params": {**IMG2IMG["params"], **params}})
    return {**resp.json(), "http": resp.status_code}


def problems(answer: dict[str, object]) -> dict[str, str]:
    error = answer["error"]
    assert isinstance(error, dict)
    return {f["field"]: f["reason"] for f in error["fields"]}


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def picture_server() -> Iterator[str]:
    """A web server on loopback with one picture, and a redirect to it."""
    picture = png(64, 64, "blue")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/fox.png")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(picture)))
            self.end_headers()
            self.wfile.write(picture)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_uploaded_asset_is_the_jobs_input(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    data = png(96, 64)
    asset = client.post("/assets", files={"file": ("in.png", data, "image/png")}).json()
    answer = submit(client, image=asset["id"])
    assert answer["http"] == 202, answer
    params = answer["params"]
    assert isinstance(params, dict) and params["image"] == asset["id"]
    record = worker_store(redis_client, settings).get(str(answer["task_id"]))
    assert record is not None
    ref = record.inputs["image"]
    assert (ref.asset_id, ref.sha256, ref.content_type) == (
        asset["id"],
        hashlib.sha256(data).hexdigest(),
        "image/png",
    )
    assert ref.upload_name == f"{ref.sha256}.png"


def test_a_data_url_becomes_an_asset(client: TestClient) -> None:
    data = png(32, 32, "green")
    answer = submit(client, image=data_url(data))
    assert answer["http"] == 202, answer
    params = answer["params"]
    assert isinstance(params, dict)
    sha = hashlib.sha256(data).hexdigest()
    assert params["image"] == sha  # the record keeps the id, not the data
    assert client.get(f"/assets/{sha}").json()["width"] == 32


def test_inpaint_takes_an_image_and_a_mask(client: TestClient) -> None:
    resp = client.post(
        "/workflows/inpaint",
        json={"prompt": "a cat", "image": data_url(png()), "mask": data_url(mask_png())},
    )
    assert resp.status_code == 202, resp.text


def test_bad_media_values_name_the_parameter(client: TestClient) -> None:
    text = client.post("/assets", files={"file": ("a.txt", b"words", "text/plain")}).json()
    cases = {
        "0" * 64: "no asset",
        "not-an-id": "expected an asset id (from POST /assets), an http(s):// URL or a data: URL",
        text["id"]: "expected an image, got not an image, video or audio file",
        data_url(b"not a picture at all"): "expected an image",
        "data:image/png;base64,@@@": "not valid base64",
        "data:image/png;base64": "needs a ','",
        "ftp://example.com/a.png": "expected an asset id",
    }
    for value, reason in cases.items():
        answer = submit(client, image=value)
        assert answer["http"] == 422, (value, answer)
        assert reason in problems(answer)["params.image"], (value, answer)
    missing = client.post("/generate", json=IMG2IMG).json()
    assert "params.image" in problems({"error": missing["error"]})


def test_size_limits_apply_to_data_urls(settings: Settings) -> None:
    small = settings.model_copy(update={"input_max_bytes": 2048, "input_max_pixels": 1000})
    with TestClient(create_app(small)) as client:
        over = submit(client, image=data_url(b"x" * 4096))
        assert "over INPUT_MAX_BYTES (2048 bytes)" in problems(over)["params.image"]
        bomb = submit(client, image=data_url(png(100, 20)))
        assert "over INPUT_MAX_PIXELS (1000)" in problems(bomb)["params.image"]


def test_url_inputs_reach_public_addresses_only(client: TestClient, picture_server: str) -> None:
    refused = submit(client, image=f"{picture_server}/fox.png")
    assert refused["http"] == 422
    assert "loopback" in problems(refused)["params.image"]
    assert "INPUT_URL_ALLOWLIST" in problems(refused)["params.image"]


def test_allowlisted_url_inputs_are_fetched(settings: Settings, picture_server: str) -> None:
    allowed = settings.model_copy(update={"input_url_allowlist": "127.0.0.1/32"})
    with TestClient(create_app(allowed)) as client:
        answer = submit(client, image=f"{picture_server}/redirect")
        assert answer["http"] == 202, answer
        params = answer["params"]
        assert isinstance(params, dict)
        asset = client.get(f"/assets/{params['image']}").json()
        assert (asset["width"], asset["height"], asset["filename"]) == (64, 64, "fox.png")
