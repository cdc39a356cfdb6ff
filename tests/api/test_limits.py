"""Limits before work, against a real uvicorn served as `comfyjobs api` serves it (uvicorn_options), over
raw sockets where the test must control what the client sends and when: headers without their body, a
body that stalls, chunks, connections that stay open."""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from comfyjobs.api.app import create_app
from comfyjobs.api.limits import RequestLimits, install_limits, key_problem, presented_key, upload_cap
from comfyjobs.api.serve import FD_RESERVE, GuardedProtocol, connection_cap, uvicorn_options
from comfyjobs.settings import Settings
from tests.support import free_port, wait_for

SOCKET_TIMEOUT_S = 30.0  # only against a hung test: every read below waits for an answer that must come
KEY = "k-limits"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        error: dict[str, str] = json.loads(self.body)["error"]
        return error


@dataclass
class Served:
    port: int
    settings: Settings
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT_S)
        self.sockets.append(sock)
        return sock


Serve = Callable[..., Served]


@pytest.fixture
def serve(settings: Settings) -> Iterator[Serve]:
    """Starts the app, limits installed, under uvicorn with uvicorn_options (settings overridden)."""
    started: list[tuple[uvicorn.Server, threading.Thread, Served]] = []

    def start(**overrides: object) -> Served:
        limited = settings.model_copy(update=overrides)
        app = create_app(limited)
        install_limits(app, limited)  # until create_app does (then a no-op: it installs once)
        port = free_port()
        options = uvicorn_options(limited) | {"host": "127.0.0.1", "port": port}
        # log_config=None: uvicorn's records reach the root logger (and caplog); its loggers' level is
        # LOG_LEVEL's (uvicorn_options).
        config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=5, **options)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        served = Served(port, limited)
        started.append((server, thread, served))
        wait_for(lambda: server.started, timeout_s=30, what="uvicorn to start")
        return served

    yield start
    for server, thread, served in started:
        for sock in served.sockets:
            sock.close()
        server.should_exit = True
        thread.join(timeout=30)


def keys(*names: str) -> object:
    return Settings.load(api_keys=",".join(names)).api_keys


def request_head(method: str, path: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: api", *headers, "", ""]).encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_reply(sock: socket.socket) -> Reply:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"the connection closed before a response: {buffer!r}")
        buffer += data
    head, _, body = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines)}
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            data = sock.recv(65536)
            if not data:
                break
            body += data
    return Reply(int(status_line.split()[1]), headers, body)


def closed_by_server(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


# --- API keys before the body -----------------------------------------------------------------------


def test_an_unauthenticated_body_is_refused_before_it_is_sent(serve: Serve) -> None:
    api = serve(api_keys=keys(KEY))
    sock = api.connect()
    sock.sendall(
        request_head("POST", "/generate", "Content-Type: application/json", "Content-Length: 52428800")
    )

    reply = read_reply(sock)  # answered although not one of the 50 MB was sent
    assert reply.status == 401
    assert reply.error()["code"] == "unauthorized"
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.headers["connection"] == "close"
    assert closed_by_server(sock)  # not kept open to drain the body

    wrong = api.connect()
    wrong.sendall(request_head("POST", "/assets", "X-API-Key: nope", "Transfer-Encoding: chunked"))
    assert read_reply(wrong).error() == {"code": "unauthorized", "message": "the API key is not valid"}


def test_keyless_routes_stay_open_and_keys_still_work(serve: Serve) -> None:
    api = serve(api_keys=keys(KEY, "k-two"))
    with httpx.Client(base_url=api.url) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/docs").status_code == 200
        assert http.get("/ready").status_code == 503  # answers (no worker) rather than 401
        # Signed links carry their own credential: a bad signature is 403, not 401.
        assert http.get("/outputs/t/x.png").status_code == 403
        assert http.get("/inputs/" + "0" * 64).status_code in (403, 404)  # 404: no such file
        assert http.post("/outputs/t/x.png").status_code == 401  # only reads are keyless
        assert http.get("/nowhere").status_code == 401  # no key: unknown paths are not revealed
        assert http.get("/workflows").status_code == 401
        assert http.get("/workflows", headers={"Authorization": "Bearer k-two"}).status_code == 200
        queued = http.post(
            "/generate", json={"workflow_id": "tiny", "params": {}}, headers={"X-API-Key": KEY}
        )
        assert queued.status_code == 202, queued.text


@pytest.mark.parametrize(("log_level", "logged"), [("INFO", True), ("WARNING", False)])
def test_the_access_log_follows_log_level(
    serve: Serve, caplog: pytest.LogCaptureFixture, log_level: str, logged: bool
) -> None:
    caplog.set_level(logging.INFO)
    api = serve(log_level=log_level)
    with httpx.Client(base_url=api.url) as http:
        assert http.get("/health").status_code == 200
    access = [r for r in caplog.records if r.name == "uvicorn.access" and "/health" in r.getMessage()]
    assert bool(access) == logged


def test_key_parsing_is_shared() -> None:
    assert presented_key({"authorization": "Bearer  abc "}) == "abc"
    assert presented_key({"authorization": "Basic abc", "x-api-key": "xyz"}) == "xyz"
    assert presented_key({}) is None
    accepted = frozenset({"a", "b"})
    assert key_problem("b", accepted) is None
    assert key_problem(None, frozenset()) is None
    assert (
        key_problem(None, accepted)
        == "an API key is required: send `Authorization: Bearer KEY` or `X-API-Key`"
    )
    assert key_problem("c", accepted) == "the API key is not valid"


# --- Body size ----------------------------------------------------------------------------------------


def test_an_oversize_content_length_is_refused_at_once(serve: Serve) -> None:
    api = serve(max_body_bytes=4096)
    sock = api.connect()
    sock.sendall(request_head("POST", "/generate", "Content-Type: application/json", "Content-Length: 4097"))
    reply = read_reply(sock)
    assert reply.status == 413
    assert reply.error() == {
        "code": "payload_too_large",
        "message": "the request body is over MAX_BODY_BYTES (4096 bytes)",
    }
    assert closed_by_server(sock)


def test_a_chunked_body_is_refused_as_it_crosses_the_cap(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    api = serve(max_body_bytes=1024)
    small = api.connect()  # under the cap, chunked bodies pass
    body = json.dumps({"workflow_id": "tiny", "params": {}}).encode()
    small.sendall(
        request_head("POST", "/generate", "Content-Type: application/json", "Transfer-Encoding: chunked")
        + chunk(body[:10])
        + chunk(body[10:])
        + b"0\r\n\r\n"
    )
    assert read_reply(small).status == 202

    caplog.set_level(logging.WARNING)
    big = api.connect()
    big.sendall(
        request_head("POST", "/generate", "Content-Type: application/json", "Transfer-Encoding: chunked")
        + chunk(b" " * 600)
        + chunk(b" " * 600)  # 1200 bytes: over 1024, and the terminating chunk never comes
    )
    reply = read_reply(big)
    assert reply.status == 413
    assert reply.error()["message"] == "the request body is over MAX_BODY_BYTES (1024 bytes)"
    assert reply.headers["connection"] == "close"
    assert closed_by_server(big)
    # The app's failure on the disconnect it was handed after the 413 is not reported as an error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_uploads_have_their_own_larger_cap(serve: Serve) -> None:
    api = serve(max_body_bytes=1024, max_upload_bytes=32 * 1024)
    with httpx.Client(base_url=api.url) as http:
        uploaded = http.post("/assets", files={"file": ("notes.txt", b"x" * 8192, "text/plain")})
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["size_bytes"] == 8192

    for path, cap, name in [
        ("/assets", 32 * 1024, "MAX_UPLOAD_BYTES"),
        ("/generate", 1024, "MAX_BODY_BYTES"),
    ]:
        sock = api.connect()
        sock.sendall(request_head("POST", path, f"Content-Length: {cap + 1}"))
        reply = read_reply(sock)
        assert (reply.status, reply.error()["message"]) == (
            413,
            f"the request body is over {name} ({cap} bytes)",
        )


def test_limits_install_once(settings: Settings) -> None:
    app = create_app(settings)
    install_limits(app, settings)
    install_limits(app, settings)
    assert [m.cls for m in app.user_middleware].count(RequestLimits) == 1


def test_the_upload_cap_follows_input_max_bytes(settings: Settings) -> None:
    assert upload_cap(settings) == settings.input_max_bytes + 1024 * 1024
    assert upload_cap(settings.model_copy(update={"input_max_bytes": 2048})) == 2048 + 1024 * 1024
    assert upload_cap(settings.model_copy(update={"max_upload_bytes": 5000})) == 5000


def test_a_response_before_the_body_is_read_closes_the_connection(serve: Serve) -> None:
    api = serve()
    sock = api.connect()
    sock.sendall(request_head("POST", "/nowhere", "Content-Length: 1000") + b"x" * 10)
    reply = read_reply(sock)  # 404 from the app, which never reads the body
    assert reply.status == 404
    assert reply.headers["connection"] == "close"
    assert closed_by_server(sock)


# --- Time ------------------------------------------------------------------------------------------


def test_a_stalled_body_gets_408(serve: Serve) -> None:
    api = serve(api_body_timeout_s=0.5)
    sock = api.connect()
    sock.sendall(
        request_head("POST", "/generate", "Content-Type: application/json", "Content-Length: 100") + b"{"
    )
    reply = read_reply(sock)
    assert reply.status == 408
    assert reply.error()["code"] == "request_timeout"
    assert "API_BODY_TIMEOUT_S (0.5 s)" in reply.error()["message"]
    assert closed_by_server(sock)


def test_health_answers_while_a_slow_body_arrives(serve: Serve) -> None:
    api = serve(api_header_timeout_s=0.5)
    body = json.dumps({"workflow_id": "tiny", "params": {}}).encode()
    slow = api.connect()
    slow.sendall(
        request_head("POST", "/generate", "Content-Type: application/json", f"Content-Length: {len(body)}")
        + body[:5]
    )
    with httpx.Client(base_url=api.url) as http:
        assert http.get("/health").json() == {"status": "ok"}
    # A connection that never sends a request is closed after API_HEADER_TIMEOUT_S; the slow request,
    # whose headers were complete before, is not (its body has API_BODY_TIMEOUT_S).
    idle = api.connect()
    assert closed_by_server(idle)
    slow.sendall(body[5:])
    assert read_reply(slow).status == 202


def test_slow_or_missing_headers_are_cut_off(serve: Serve) -> None:
    api = serve(api_header_timeout_s=0.5)
    partial = api.connect()
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n")  # and never the blank line
    reply = read_reply(partial)
    assert reply.status == 408
    assert closed_by_server(partial)

    idle = api.connect()
    assert closed_by_server(idle)  # nothing sent: closed without a word

    reused = api.connect()  # a kept-alive connection is timed again from its next request's first byte
    reused.sendall(request_head("GET", "/health"))
    assert read_reply(reused).status == 200
    reused.sendall(b"GET /health HTTP/1.1\r\n")
    assert read_reply(reused).status == 408


def test_oversize_headers_are_refused(serve: Serve) -> None:
    api = serve(api_max_header_bytes=1024)
    sock = api.connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\nX-Pad: " + b"a" * 4096)
    assert read_reply(sock).status == 400
    assert closed_by_server(sock)

    # Trickled in pieces, each under the cap, on a connection that served a request before.
    reused = api.connect()
    reused.sendall(request_head("GET", "/health"))
    assert read_reply(reused).status == 200
    head, piece = b"GET /health HTTP/1.1\r\nHost: api\r\n", b"X-Pad: " + b"a" * 200 + b"\r\n"
    reused.sendall(head)
    for _ in range((1024 - len(head)) // len(piece) + 1):  # the last piece takes it over the cap
        reused.sendall(piece)  # (none after it: bytes the server never reads would make its close a reset)
    reply = read_reply(reused)
    assert (reply.status, reply.body) == (400, b"request line and headers too large")
    assert closed_by_server(reused)


def test_a_request_and_an_oversize_head_in_one_read_are_refused(serve: Serve) -> None:
    api = serve(api_max_header_bytes=1024, api_header_timeout_s=600)
    sock = api.connect()
    pad = b"a" * 600_000  # more than one read of the server's
    with contextlib.suppress(OSError):  # (refused and closed before the last)
        sock.sendall(request_head("GET", "/health") + b"GET /health HTTP/1.1\r\nX-Pad: " + pad)
    answer = b""
    with contextlib.suppress(ConnectionResetError):  # (closed with bytes still coming)
        while data := sock.recv(65536):
            answer += data
    # Closed; the first request's answer, if it came before the refusal, is its own.
    assert not answer or answer.startswith(b"HTTP/1.1 200 "), answer[:100]

    whole = api.connect()  # a head that came whole, in one read, over the cap
    whole.sendall(request_head("GET", "/health", "X-Pad: " + "a" * 20_000))
    assert read_reply(whole).status == 400
    assert closed_by_server(whole)


def test_pipelined_requests_are_not_counted_as_one_head(serve: Serve) -> None:
    api = serve(api_max_header_bytes=1024)
    sock = api.connect()
    # 40 small heads, 1.2 KB, and the start of a 41st, in one write
    sock.sendall(request_head("GET", "/health") * 40 + b"GET /health HTTP/1.1\r\n")
    replies = b""
    while replies.count(b"HTTP/1.1 ") < 40:
        data = sock.recv(65536)
        assert data, replies[-300:]
        replies += data
    assert replies.count(b"HTTP/1.1 200 OK") == 40


def test_an_unparsable_request_during_another_is_not_answered_as_that_one(serve: Serve) -> None:
    api = serve()
    sock = api.connect()
    sock.sendall(request_head("POST", "/generate", "Content-Type: application/json", "Content-Length: 10"))
    sock.sendall(b'{"a": 1}\r\n' + b"NOT HTTP\r\n\r\n")  # its body, then garbage
    try:
        answer = sock.recv(65536)
    except ConnectionResetError:
        answer = b""
    assert b"Invalid HTTP request" not in answer


def test_oversize_trailers_are_refused(serve: Serve) -> None:
    api = serve(api_max_header_bytes=1024, api_header_timeout_s=600, api_body_timeout_s=600)
    sock = api.connect()
    head = request_head("POST", "/generate", "Content-Type: application/json", "Transfer-Encoding: chunked")
    sock.sendall(head + chunk(b"{}") + b"0\r\n")  # the body's end; then trailers that never end
    with contextlib.suppress(OSError):  # (refused and closed before the last)
        for _ in range(1024):  # 1 MB: more than one read of the server's (they are not kept, only counted)
            sock.sendall(b"X-Trailer: " + b"a" * 1000 + b"\r\n")
    try:
        answer = sock.recv(65536)
    except ConnectionResetError:  # closed with bytes still coming: the reply may be lost to the reset
        answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:100]


def test_a_response_may_outlast_the_header_timeout(serve: Serve) -> None:
    api = serve(api_header_timeout_s=0.3, sse_heartbeat_s=0.5)
    with httpx.Client(base_url=api.url) as http:
        task_id = http.post("/generate", json={"workflow_id": "tiny", "params": {}}).json()["task_id"]
    sock = api.connect()
    sock.sendall(request_head("GET", f"/tasks/{task_id}/events"))
    streamed = b""
    while streamed.count(b": heartbeat") < 3:  # a stream of 1.5 s at least: five header timeouts
        data = sock.recv(65536)
        assert data, f"the stream was cut: {streamed[-300:]!r}"
        streamed += data
    assert streamed.startswith(b"HTTP/1.1 200 ")


def test_blank_lines_after_a_response_are_timed_as_a_head(serve: Serve) -> None:
    api = serve(api_header_timeout_s=0.5, api_keep_alive_s=600)
    sock = api.connect()
    sock.sendall(request_head("GET", "/health"))
    assert read_reply(sock).status == 200
    sock.settimeout(1.0)  # idle between requests: API_KEEP_ALIVE_S applies, not API_HEADER_TIMEOUT_S
    with pytest.raises(TimeoutError):
        sock.recv(1)
    sock.settimeout(SOCKET_TIMEOUT_S)
    sock.sendall(b"\r\n")  # no request follows: closed after API_HEADER_TIMEOUT_S
    assert closed_by_server(sock)


# --- Connections -------------------------------------------------------------------------------------


def test_connections_beyond_the_cap_get_503(serve: Serve) -> None:
    api = serve(api_max_connections=3, api_header_timeout_s=600)
    held = [api.connect() for _ in range(2)]
    for sock in held:  # two requests waiting for their body, one connection that has sent nothing
        sock.sendall(request_head("POST", "/generate", "Content-Length: 100") + b"{")
    idle = api.connect()

    refused = api.connect()  # accepted after the three (the kernel's queue is first in, first out)
    reply = read_reply(refused)
    assert reply.status == 503
    assert reply.error()["code"] == "too_many_connections"
    assert reply.headers["retry-after"] == "1"
    assert closed_by_server(refused)

    idle.sendall(request_head("GET", "/health", "Connection: close"))
    assert read_reply(idle).status == 200
    assert closed_by_server(idle)  # gone from the server's count before the socket closed
    again = api.connect()
    again.sendall(request_head("GET", "/health"))
    assert read_reply(again).status == 200


def test_uvicorn_options_carry_the_limits(settings: Settings) -> None:
    options = uvicorn_options(
        settings.model_copy(
            update={
                "api_max_connections": 100,
                "api_keep_alive_s": 7,
                "api_port": 9100,
                "api_header_timeout_s": 2.5,
                "api_max_header_bytes": 4096,
            }
        )
    )
    assert (options["host"], options["port"]) == (settings.api_host, 9100)
    assert options["limit_concurrency"] == 101  # uvicorn counts the asking connection itself
    assert options["timeout_keep_alive"] == 7
    protocol = options["http"]
    assert issubclass(protocol, GuardedProtocol)
    assert protocol.MAX_HEADER_BYTES == 4096
    assert protocol.MAX_CONNECTIONS == 100
    assert protocol.HEADER_TIMEOUT_S == 2.5


def test_the_connection_cap_stays_under_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert connection_cap(500) == 500
    assert connection_cap(5000) == 1024 - FD_RESERVE


# --- Errors echo excerpts only -------------------------------------------------------------------------


def test_refusals_quote_only_an_excerpt_of_the_input(serve: Serve) -> None:
    api = serve()
    big = "A" * 100_000
    with httpx.Client(base_url=api.url) as http:
        replies = [
            http.post("/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x", big: 1}}),
            http.post("/workflows/txt2img", json={"prompt": "x", big: 1}),
            http.post(
                "/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x", "checkpoint": big}}
            ),
            http.post("/generate", json={"workflow_id": big, "params": {}}),
            http.post("/generate", json={"workflow_id": "tiny", "params": {f"p{i}": 1 for i in range(5000)}}),
        ]
    for reply in replies:
        assert reply.status_code in (404, 422), reply.text[:200]
        assert len(reply.content) < 8192, reply.text[:300]
