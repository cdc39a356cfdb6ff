"""The ComfyUI client's HTTP against a local server: the base URL's path is kept (ComfyUI behind a
proxy's prefix), and a server that does not answer is ComfyUnavailableError."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.errors import ComfyUnavailableError
from tests.support import free_port


class _Handler(BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:
        _Handler.paths.append(self.path)
        body = json.dumps({"system": {}, "devices": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_base_url_with_a_path_keeps_it(server_url: str) -> None:
    client = ComfyClient(server_url + "/comfy/")
    try:
        assert client.system_stats() == {"system": {}, "devices": []}
        assert client.answers()
    finally:
        client.close()
    assert _Handler.paths[-2:] == ["/comfy/system_stats", "/comfy/system_stats"]


def test_nothing_listening_is_comfyui_unavailable() -> None:
    client = ComfyClient(f"http://127.0.0.1:{free_port()}", request_timeout_s=2)
    try:
        assert not client.answers(timeout_s=2)
        with pytest.raises(ComfyUnavailableError, match="did not answer"):
            client.system_stats()
    finally:
        client.close()
