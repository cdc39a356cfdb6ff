"""A real HTTP file server for the download tests: Range requests, connections cut mid-file, servers that
ignore Range, and enough of the Hugging Face resolve endpoint for huggingface_hub to download from it."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cut_times: int = 0  # this many GETs send half of what they promise, then close the connection
    ignore_range: bool = False


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


def hf_route(body: bytes, *, commit: str = "c" * 40) -> Route:
    """What huggingface.co answers for a file at /ORG/REPO/resolve/REV/PATH (a non-LFS file: no redirect)."""
    return Route(
        body=body, headers={"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
    )


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval only so that stop() (which waits for the next poll) is quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fileserver", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def gets(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == "GET" and s.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def _answer(self, *, send_body: bool) -> None:
                with server._lock:
                    server.seen.append(
                        Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                    route = server.routes.get(self.path)
                    cut = bool(route and send_body and route.cut_times > 0)
                    if route and cut:
                        route.cut_times -= 1
                if route is None:
                    self._send(404, b"", {})
                    return
                if route.status != 200:
                    self._send(route.status, b"", route.headers)
                    return
                body, status, headers = route.body, 200, dict(route.headers)
                match = _RANGE.match(self.headers.get("Range", ""))
                if match and not route.ignore_range:
                    start = int(match[1])
                    if start >= len(body):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                        return
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    body, status = body[start:], 206
                self._send(status, body if send_body else b"", headers, length=len(body), cut=cut)

            def _send(
                self,
                status: int,
                body: bytes,
                headers: dict[str, str],
                *,
                length: int | None = None,
                cut: bool = False,
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if cut:
                    # Promise the whole body, send half, hang up: what a dropped connection looks like.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


@contextmanager
def running_file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def blackhole_address() -> Iterator[tuple[str, int]]:
    """A local address whose connects time out, like a host that drops packets: a listener with a backlog
    of 0 whose accept queue is already full, so the kernel silently drops every further SYN (Linux).

    Stands in for a non-routable address such as 10.255.255.1, which some sandboxes answer through a
    transparent proxy, so it would not time out there."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    # Connect until one connect times out: from then on the queue is full (how many fit is the kernel's call).
    for _ in range(16):
        filler = socket.socket()
        filler.settimeout(0.2)
        try:
            filler.connect(address)
        except TimeoutError:
            filler.close()
            break
        fillers.append(filler)
    else:
        raise RuntimeError("could not fill the listen queue: connects never time out here")
    try:
        yield address[0], int(address[1])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
