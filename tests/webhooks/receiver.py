"""A local webhook receiver: records every POST (headers and body) and answers from a script."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """``answer(request number from 1, request)`` gives the HTTP status (200 by default); it may block
    (a slow receiver). Stop and start again on the same port to be "down" in between."""

    def __init__(self, answer: Callable[[int, Received], int] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.answer = answer or (lambda _n, _r: 200)
        self.received: list[Received] = []
        self.changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.changed:
                    receiver.received.append(request)
                    number = len(receiver.received)
                    receiver.changed.notify_all()
                status = receiver.answer(number, request)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait(self, check: Callable[[list[Received]], bool], timeout_s: float, what: str) -> list[Received]:
        """Blocks until ``check(everything received so far)`` holds (woken by each request)."""
        with self.changed:
            if not self.changed.wait_for(lambda: check(self.received), timeout_s):
                raise AssertionError(f"timed out waiting for {what}; received {len(self.received)}")
            return list(self.received)


@contextmanager
def running(receiver: Receiver) -> Iterator[Receiver]:
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
