"""HTTP to one ComfyUI, on the standard library's ``http.client``: what ``comfy.client`` sends and reads.

A kept-alive connection per thread (a worker's job threads each post their own prompts). Measured against
urllib3 for a prompt's POST: about half the CPU (the worker's own CPU is what limits a GPU running small
jobs back to back). No retries: a prompt is posted once. A kept-alive connection
ComfyUI closed meanwhile is noticed before it is reused (an idle connection is readable only then) and
replaced. No proxies: ComfyUI is reached directly. Every failure, whatever its cause (refused, reset,
timed out, a bad answer), is ComfyUnavailableError.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypedDict, Unpack
from urllib.parse import urlencode, urlsplit

from comfyjobs.errors import ComfyUnavailableError

_ERRORS = (http.client.HTTPException, OSError, ValueError)


class Sending(TypedDict, total=False):
    """What a request may carry besides its method and path."""

    body: bytes | None
    content_type: str | None
    query: dict[str, str] | None
    timeout_s: float | None  # (None: the client's own)


class Answer(NamedTuple):
    status: int
    data: bytes

    def json(self) -> Any:
        """The body as JSON; raises ValueError if it is not."""
        return json.loads(self.data)


class ComfyHttp:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port
        self._prefix = url.path.rstrip("/")  # (ComfyUI behind a proxy, under a path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []  # every thread's, to close them all

    def request(self, method: str, path: str, **options: Unpack[Sending]) -> Answer:
        """Sends a request and reads the whole answer."""
        with self.stream(method, path, **options) as response:
            try:
                return Answer(response.status, response.read())
            except _ERRORS as exc:
                raise self._unavailable(exc) from exc

    def post_json(self, path: str, payload: Any, timeout_s: float | None = None) -> Answer:
        body = json.dumps(payload).encode()
        return self.request("POST", path, body=body, content_type="application/json", timeout_s=timeout_s)

    @contextmanager
    def stream(
        self, method: str, path: str, **options: Unpack[Sending]
    ) -> Iterator[http.client.HTTPResponse]:
        """Sends a request; the answer is read in the block (a connection whose answer was not read to
        its end is closed after it, not reused)."""
        body, content_type, query = options.get("body"), options.get("content_type"), options.get("query")
        timeout_s = options.get("timeout_s")
        connection = self._connection()
        seconds = self.timeout_s if timeout_s is None else timeout_s
        connection.timeout = seconds
        if connection.sock is not None:
            connection.sock.settimeout(seconds)
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            connection.request(method, target, body, headers)
            response = connection.getresponse()
        except BaseException as exc:
            connection.close()
            if isinstance(exc, _ERRORS):
                raise self._unavailable(exc) from exc
            raise
        if 300 <= response.status < 400:  # (nothing is followed: a prompt is posted once, where it was meant)
            connection.close()
            where = response.getheader("Location", "elsewhere")
            raise ComfyUnavailableError(f"ComfyUI at {self.base_url} sent {method} {path} to {where}")
        try:
            yield response
        except BaseException:
            connection.close()
            raise
        if not response.isclosed():  # (read to its end, a kept-alive connection is ready for the next)
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = self._local.connection = kind(self._host, self._port, timeout=self.timeout_s)
            with self._lock:
                self._connections.append(connection)
        elif connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()  # (it connects again as it sends the request)
        return connection

    def _unavailable(self, exc: BaseException) -> ComfyUnavailableError:
        reason = str(exc) or type(exc).__name__
        return ComfyUnavailableError(f"ComfyUI at {self.base_url} did not answer: {reason}")


def _closed_by_peer(sock: Any) -> bool:
    """An idle kept-alive connection with something to read: ComfyUI closed it (or sent what nobody
    asked for); either way it is not fit for the next request."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
