"""HTTP to ComfyUI (comfy.http) against a plain socket server that shows what reaches it: a kept-alive
connection is reused, one ComfyUI closed while idle is replaced before the next request (a prompt is
never posted into a dead connection), and an answer cut short, or a redirect, is ComfyUnavailableError."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from comfyjobs.comfy.client import ComfyClient, OutputFile
from comfyjobs.comfy.http import ComfyHttp
from comfyjobs.errors import ComfyUnavailableError

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class Server:
    """Answers each request on a connection with the next of ``answers`` (bytes; then a close when
    ``close_after``), and records the connections and request lines."""

    def __init__(self, answers: list[bytes], close_after: bool = False) -> None:
        self.answers = answers
        self.close_after = close_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = threading.Event()  # the server closed a connection
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                while self.answers and (line := reader.readline()):
                    self.requests.append(line.rstrip())
                    length = 0
                    while (header := reader.readline()) not in (b"\r\n", b""):
                        name, _, value = header.partition(b":")
                        length = int(value) if name.lower() == b"content-length" else length
                    reader.read(length)
                    conn.sendall(self.answers.pop(0))
                    if self.close_after:
                        break
            self.closed.set()

    def close(self) -> None:
        self.listener.close()


@contextmanager
def serving(answers: list[bytes], close_after: bool = False) -> Iterator[tuple[Server, ComfyHttp]]:
    server = Server(answers, close_after)
    http = ComfyHttp(f"http://127.0.0.1:{server.port}/comfy", timeout_s=5)
    try:
        yield server, http
    finally:
        http.close()
        server.close()


def test_a_kept_alive_connection_is_reused() -> None:
    with serving([OK, OK, OK]) as (server, http):
        for _ in range(3):
            answer = http.post_json("/prompt", {"prompt": {}})
            assert (answer.status, answer.json()) == (200, {"ok": True})
        assert server.connections == 1
        assert server.requests == [b"POST /comfy/prompt HTTP/1.1"] * 3


def test_a_connection_comfyui_closed_while_idle_is_replaced_before_the_next_request() -> None:
    with serving([OK, OK], close_after=True) as (server, http):
        assert http.request("GET", "/system_stats", query={"a": "b c"}).status == 200
        assert server.closed.wait(5)
        assert http.post_json("/prompt", {}).status == 200  # not sent into the closed connection
        assert server.connections == 2
        assert server.requests == [b"GET /comfy/system_stats?a=b+c HTTP/1.1", b"POST /comfy/prompt HTTP/1.1"]


def test_an_answer_cut_short_is_comfyui_unavailable_and_the_next_request_works() -> None:
    cut = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'
    with serving([cut, OK], close_after=True) as (server, http):
        with pytest.raises(ComfyUnavailableError, match="did not answer"):
            http.request("GET", "/history")
        assert http.request("GET", "/history").json() == {"ok": True}
        assert server.connections == 2


def test_an_output_download_cut_short_is_comfyui_unavailable_and_leaves_no_file(tmp_path: Path) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300
    server = Server([cut], close_after=True)
    client = ComfyClient(f"http://127.0.0.1:{server.port}")
    dest = tmp_path / "out.png"
    try:
        with pytest.raises(ComfyUnavailableError, match="700 bytes missing"):
            client.download(OutputFile("9", "out.png", "", "output"), dest)
        assert not dest.exists()
        assert server.requests == [b"GET /view?filename=out.png&subfolder=&type=output HTTP/1.1"]
    finally:
        client.close()
        server.close()


def test_a_redirect_is_not_followed() -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/prompt\r\nContent-Length: 0\r\n\r\n"
    with serving([moved]) as (server, http):
        with pytest.raises(ComfyUnavailableError, match="to http://elsewhere/prompt"):
            http.post_json("/prompt", {})
        assert len(server.requests) == 1
