"""How uvicorn serves the API: connection-level limits, all in ``uvicorn_options`` (the `api` command's).

Guards file descriptors and memory against connections that cost nothing to open and never finish:
measured without it, 21,000 idle connections exhausted the API's file descriptors.

The API runs on uvicorn's httptools protocol (its C parser: about half the CPU of its h11 one per
request, measured on a 2-core machine). What uvicorn (0.54) bounds by its own options:

- ``timeout_keep_alive`` = API_KEEP_ALIVE_S: a keep-alive connection idle *between* requests is closed.
  uvicorn arms it only after a response; a fresh connection, or one sending its headers slowly, is never
  timed out by uvicorn.
- ``limit_concurrency`` = API_MAX_CONNECTIONS + 1: a request arriving while that many connections are
  open, or request tasks running (including ones whose client has gone), is answered 503 (plain text).
  uvicorn counts the asking connection itself, hence the +1. It still accepts and keeps every connection:
  alone it bounds work, not file descriptors.

What this module adds, in a subclass of uvicorn's httptools protocol (``Config(http=...)`` takes a class):

- **Header size** (API_MAX_HEADER_BYTES): the bytes that are not a body (request line and headers, chunk
  size lines, trailers, blank lines) since the last step forward; over it, 400 and close (httptools,
  unlike h11, has no cap of its own, and keeps a header being received in memory until it ends).
- **Header timeout** (API_HEADER_TIMEOUT_S): from a connection's opening, and from the first byte (a blank
  line too) after each response, the request line and headers must be complete within it, however slowly
  they trickle (slowloris); else the connection is closed (with a 408 if part of a request had arrived).
- **Connection cap** (API_MAX_CONNECTIONS): a connection that would make more than that many open is
  answered 503 and closed as soon as it is accepted, releasing its descriptor at once. The cap is kept
  below the open-file limit (RLIMIT_NOFILE) less FD_RESERVE, so the cap, not the kernel, refuses first.

Not bounded here: the kernel's accept queue (uvicorn's ``backlog``, 2048) and a body that trickles a byte
per API_BODY_TIMEOUT_S (each gap is bounded, see ``comfyjobs.api.limits``, not the total time; the
connection cap bounds how many such clients there can be). TLS is left to a proxy in front.

**Several processes** (``comfyjobs api --workers N``, ``serve``): uvicorn's supervisor binds the socket and
spawns N workers that accept on it, each with its own event loop, Redis pool and change subscriber (every
limit above is per process). It pickles its Config into each worker, so the app is given as a factory's
import string (``app_from_env``, which builds it from the environment as ``Settings.load()`` reads it) and
the protocol as a class's (``WorkerProtocol``, given its limits by that factory).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import time
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from comfyjobs.errors import ConfigError
from comfyjobs.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

APP_FACTORY = "comfyjobs.api.serve:app_from_env"
WORKER_PROTOCOL = "comfyjobs.api.serve:WorkerProtocol"

FD_RESERVE = 128  # descriptors kept for Redis connections, spooled uploads, served files, logs
REFUSAL_LOG_INTERVAL_S = 10.0

_TOO_MANY = json.dumps(
    {"error": {"code": "too_many_connections", "message": "the API has as many connections as it serves"}}
).encode()
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_TOO_MANY)).encode() + b"\r\n\r\n" + _TOO_MANY
)
HEADERS_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_TOO_LARGE = b"request line and headers too large"
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n\r\n" + _TOO_LARGE
)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: address, protocol and limits."""
    max_connections = connection_cap(settings.api_max_connections)
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "http": guarded_protocol(
            settings.api_header_timeout_s, settings.api_max_header_bytes, max_connections
        ),
        "timeout_keep_alive": settings.api_keep_alive_s,
        "limit_concurrency": max_connections + 1,
        # uvicorn's own loggers (its access log: a line per request) follow LOG_LEVEL like ours.
        "log_level": settings.log_level.lower(),
    }


def serve(settings: Settings, workers: int = 1) -> None:
    """Serves the API until stopped: in this process, or in ``workers`` processes sharing its socket."""
    from comfyjobs.api.app import create_app

    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, not {workers}")
    app = create_app(settings)  # bad manifests or no REDIS_URL fail here, once, before the bind
    options = uvicorn_options(settings)
    if workers == 1:
        uvicorn.run(app, workers=1, **options)  # workers=1: uvicorn would read WEB_CONCURRENCY instead
        return
    # Each worker loads its settings from the environment: the host and port given as flags go there too.
    os.environ.update(API_HOST=settings.api_host, API_PORT=str(settings.api_port))
    uvicorn.run(APP_FACTORY, factory=True, workers=workers, **(options | {"http": WORKER_PROTOCOL}))


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker of ``serve(settings, workers > 1)``: settings from the
    environment, logging as the `comfyjobs` command sets it, and ``WorkerProtocol``'s limits (uvicorn
    loads the app before it accepts a connection)."""
    from comfyjobs.api.app import create_app

    settings = Settings.load()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    WorkerProtocol.HEADER_TIMEOUT_S = settings.api_header_timeout_s
    WorkerProtocol.MAX_HEADER_BYTES = settings.api_max_header_bytes
    WorkerProtocol.MAX_CONNECTIONS = connection_cap(settings.api_max_connections)
    return create_app(settings)


def connection_cap(requested: int) -> int:
    """API_MAX_CONNECTIONS, lowered to what the open-file limit leaves (with a warning)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or requested <= soft - FD_RESERVE:
        return requested
    usable = max(1, soft - FD_RESERVE)
    log.warning(
        "API_MAX_CONNECTIONS=%d is more than the open-file limit (%d) less %d in reserve allows: using %d "
        "(raise `ulimit -n` for more)",
        requested,
        soft,
        FD_RESERVE,
        usable,
    )
    return usable


def guarded_protocol(
    header_timeout_s: float, max_header_bytes: int, max_connections: int
) -> type[GuardedProtocol]:
    """uvicorn's httptools protocol with this header timeout, header size and connection cap."""

    class Configured(GuardedProtocol):
        HEADER_TIMEOUT_S = header_timeout_s
        MAX_HEADER_BYTES = max_header_bytes
        MAX_CONNECTIONS = max_connections

    return Configured


class GuardedProtocol(HttpToolsProtocol):
    """Counts what a client sends that is not a body: request lines and headers, chunk size lines,
    trailers, blank lines between requests. More than MAX_HEADER_BYTES of it since the last step forward
    (a head complete, a chunk begun, a request complete) is refused, so no head, trailer or line grows
    without bound in memory. A read is counted whole unless such a step came in it: then a head begun after
    that step counts what of it was parsed (a header still arriving in that read is bounded by the read's
    size, at most 256 KiB, and counted from the next). A head that came whole is measured as parsed (its
    line and headers) and refused by uvicorn's 400 before the app sees it. Nothing is written while a
    request is being answered: a refusal then only closes."""

    HEADER_TIMEOUT_S = 10.0
    MAX_HEADER_BYTES = 16 * 1024
    MAX_CONNECTIONS = 2048

    _refused = 0  # connections refused since the last log line (shared: one server per process)
    _refusal_logged_at = 0.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between requests, or in one's request line and headers
        self._begun = False  # a request's first byte came, and its headers have not all come yet
        self._overhead = 0  # bytes not of a body since the last step forward
        # Of the read being parsed: its body bytes, its steps forward, and whether a request began after
        # the last of them.
        self._read_body = 0
        self._read_steps = 0
        self._read_begun = False
        self._head_size = 0  # the request line and headers of the head being parsed, as parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.MAX_CONNECTIONS:
            self._note_refusal()
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._arm_header_timer()  # the first request must start (and its headers end) in time

    def data_received(self, data: bytes) -> None:
        self._read_body, self._read_steps, self._read_begun = 0, 0, False
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_header_timer()
            return
        overhead = len(data) - self._read_body
        if self._read_steps == 0:
            self._overhead += overhead
        else:  # (a head begun after this read's last step: what of it was parsed; the rest, next reads)
            self._overhead = self._head_size if self._read_begun and self._in_head else 0
        if self._overhead > self.MAX_HEADER_BYTES:
            self._refuse(HEADERS_TOO_LARGE)
        elif self._in_head and self._header_timer is None and not self._in_flight():
            # Any byte between requests, a blank line too, puts the next head on the clock (while a
            # request is answered, its response's end does: on_response_complete).
            self._arm_header_timer()

    # The parser's callbacks, from within super().data_received.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._begun, self._read_begun, self._head_size = True, True, True, 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # (a trailer is dropped: ASGI has no request trailers)
            self._head_size += len(name) + len(value) + 4
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_size > self.MAX_HEADER_BYTES:  # (a whole head in one read; uvicorn answers 400)
            raise ValueError("request line and headers too large")
        self._in_head, self._begun = False, False
        self._step()
        self._cancel_header_timer()  # the body has its own timeout
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._read_body += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._step()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next request's head, whenever it comes
        self._step()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if not self._in_head:  # answered before its body came: no timer would bound the rest of it
            self.transport.close()
        elif self._begun and self._header_timer is None:
            self._arm_header_timer()  # a request sent before this response ended: its head's turn now

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse (or a head too large): only a close while
        another request is being answered (it would be read as that one's response)."""
        if self._in_flight():
            self._cancel_header_timer()
            self.transport.close()
        else:
            super().send_400_response(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _step(self) -> None:
        self._read_steps += 1
        self._read_begun = False

    def _in_flight(self) -> bool:
        """A request is being answered: anything written now would be read as its response."""
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, reply: bytes) -> None:
        """Closes the connection, with ``reply`` unless a request is being answered on it."""
        self._cancel_header_timer()
        if not self._in_flight():
            self.transport.write(reply)
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.HEADER_TIMEOUT_S, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._in_head or self._in_flight():
            return  # (in flight: its response's end arms the timer again if a next head has begun)
        if self._begun:
            self._refuse(HEADERS_TIMED_OUT)
        else:
            self.transport.close()

    @classmethod
    def _note_refusal(cls) -> None:
        GuardedProtocol._refused += 1
        now = time.monotonic()
        if now - GuardedProtocol._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            log.warning(
                "refused %d connection(s): API_MAX_CONNECTIONS (%d) are open",
                GuardedProtocol._refused,
                cls.MAX_CONNECTIONS,
            )
            GuardedProtocol._refused = 0
            GuardedProtocol._refusal_logged_at = now


class WorkerProtocol(GuardedProtocol):
    """The protocol of ``serve``'s worker processes, by import string; ``app_from_env`` sets its limits."""
