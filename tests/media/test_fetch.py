"""fetch_url against a real HTTP server on 127.0.0.1; DNS answers for made-up names come from `resolve`."""

from __future__ import annotations

import gzip
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import comfyjobs
from comfyjobs.errors import MediaError, PayloadTooLargeError
from comfyjobs.media.fetch import Fetched, fetch_url
from comfyjobs.media.url_policy import UrlPolicy
from tests.support import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
LOOPBACK = UrlPolicy(["127.0.0.1"])


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.port = int(self.server_address[1])
        self.seen: list[Seen] = []
        self.release = threading.Event()  # set at teardown: lets /hang and /liar-length handlers finish

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up on a refused body is expected here


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def begin(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.seen.append(Seen(self.path, dict(self.headers.items())))
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        route = ROUTES.get(parts.path)
        if route is not None:
            route(self, query)
        elif parts.path.startswith("/loop/"):
            self.reply(302, headers={"Location": f"/loop/{int(parts.path[6:]) + 1}"})
        else:
            self.reply(404, b"not found")


def _chunked(handler: Handler, query: dict[str, str]) -> None:
    handler.begin({"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"})
    for _ in range(int(query.get("n", "100"))):
        handler.wfile.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
    handler.wfile.write(b"0\r\n\r\n")


def _close_delimited(handler: Handler, query: dict[str, str]) -> None:
    handler.begin({"Content-Type": "application/octet-stream"})  # no length: the body ends at close
    handler.wfile.write(b"y" * 5000)


def _hang(handler: Handler, query: dict[str, str]) -> None:
    handler.server.release.wait()  # answers nothing until teardown


def _liar_length(handler: Handler, query: dict[str, str]) -> None:
    handler.begin({"Content-Length": "10000000"})  # a client that reads on would wait for release
    handler.wfile.write(b"z" * 10)
    handler.wfile.flush()
    handler.server.release.wait()


def _to(location: Callable[[Handler], str]) -> Callable[[Handler, dict[str, str]], None]:
    return lambda handler, query: handler.reply(302, headers={"Location": location(handler)})


ROUTES: dict[str, Callable[[Handler, dict[str, str]], None]] = {
    "/file.png": lambda h, q: h.reply(200, PNG, {"Content-Type": "image/png"}),
    "/text": lambda h, q: h.reply(200, b"hello", {"Content-Type": "Text/Plain; charset=utf-8"}),
    "/exact": lambda h, q: h.reply(200, b"e" * 1000),
    "/big": lambda h, q: h.reply(200, b"b" * 5000),
    "/gzip": lambda h, q: h.reply(200, gzip.compress(b"\0" * 100_000), {"Content-Encoding": "gzip"}),
    "/download": lambda h, q: h.reply(200, b"%PDF", {"Content-Disposition": q["cd"]}),
    "/hang": _hang,
    "/chunked": _chunked,
    "/close-delimited": _close_delimited,
    "/liar-length": _liar_length,
    "/hop": _to(lambda h: "/file.png"),
    "/to-other": _to(lambda h: f"http://127.0.0.2:{h.server.port}/file.png"),
    "/to-metadata": _to(lambda h: "http://metadata.test/latest/meta-data/"),
    "/to-file": _to(lambda h: "file:///etc/passwd"),
}


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join()


def fetch(url: str, policy: UrlPolicy = LOOPBACK, **kwargs: Any) -> Fetched:
    options: dict[str, Any] = {"max_bytes": 1_000_000, "timeout_s": 30.0, **kwargs}
    return fetch_url(url, policy=policy, **options)


def resolver(answers: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


# --- UrlPolicy.check_address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
    ],
)
def test_check_address_refuses_non_public_ranges(address: str, kind: str) -> None:
    with pytest.raises(MediaError, match=kind) as caught:
        UrlPolicy().check_address(address, ipaddress.ip_address(address))
    assert "INPUT_URL_ALLOWLIST" in caught.value.message


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14"])
def test_check_address_accepts_public_addresses(address: str) -> None:
    UrlPolicy().check_address("example.com", ipaddress.ip_address(address))


def test_refusal_message_names_host_address_and_kind() -> None:
    with pytest.raises(MediaError) as caught:
        UrlPolicy().check_address("localhost", ipaddress.ip_address("127.0.0.1"))
    assert caught.value.message == (
        "refused: localhost resolves to 127.0.0.1, a loopback address (allow it with INPUT_URL_ALLOWLIST)"
    )


def test_allowlist_by_network_single_ip_and_host_name() -> None:
    policy = UrlPolicy(["10.0.0.0/8", "127.0.0.1", "::1", "MinIO.Internal", " "])
    for host, address in [
        ("a.test", "10.1.2.3"),
        ("a.test", "127.0.0.1"),
        ("a.test", "::ffff:127.0.0.1"),
        ("a.test", "::1"),
        ("minio.internal", "192.168.1.1"),
        ("MINIO.internal.", "169.254.169.254"),
    ]:
        policy.check_address(host, ipaddress.ip_address(address))
    for host, address in [
        ("a.test", "127.0.0.2"),
        ("a.test", "192.168.1.1"),
        ("minio.internal.x", "192.168.1.1"),
    ]:
        with pytest.raises(MediaError):
            policy.check_address(host, ipaddress.ip_address(address))


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "minio.internal:9000", "two words"])
def test_allowlist_rejects_malformed_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="allowlist entry"):
        UrlPolicy([entry])


def test_allowlist_is_not_one_string() -> None:
    with pytest.raises(TypeError):
        UrlPolicy("127.0.0.1")


# --- fetch_url: what is refused before connecting ---------------------------------------------------


def test_loopback_url_is_refused_by_default_without_a_request(server: Server) -> None:
    with pytest.raises(MediaError, match=r"127\.0\.0\.1 is a loopback address"):
        fetch(server.url("/file.png"), UrlPolicy())
    assert server.seen == []


def test_localhost_is_refused_by_default(server: Server) -> None:
    with pytest.raises(MediaError, match=r"refused: localhost resolves to .*loopback"):
        fetch(server.url("/file.png", host="localhost"), UrlPolicy())
    assert server.seen == []


@pytest.mark.parametrize(
    ("host", "answer", "kind"),
    [("metadata.test", "169.254.169.254", "link-local"), ("intranet.test", "10.0.0.5", "private")],
)
def test_names_resolving_to_refused_ranges_are_refused(
    server: Server, host: str, answer: str, kind: str
) -> None:
    with pytest.raises(MediaError, match=f"{host} resolves to {answer}, a {kind} address"):
        fetch(server.url("/file.png", host=host), resolve=resolver({host: [answer]}))
    assert server.seen == []


def test_one_refused_address_among_several_refuses_the_url(server: Server) -> None:
    mixed = resolver({"mixed.test": ["127.0.0.1", "10.0.0.5"]})
    with pytest.raises(MediaError, match=r"10\.0\.0\.5, a private address"):
        fetch(server.url("/file.png", host="mixed.test"), resolve=mixed)
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/file.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http:///file.png",
        "http://",
        "//127.0.0.1/file.png",
        "127.0.0.1/file.png",
        "http://user:secret@127.0.0.1/file.png",
        "http://127.0.0.1:99999/file.png",
        "http://[::1/file.png",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(MediaError):
        fetch(url)


def test_messages_quote_at_most_200_characters_of_the_url() -> None:
    with pytest.raises(MediaError) as caught:
        fetch("ftp://" + "a" * 5000)
    assert len(caught.value.message) < 300


def test_dns_failures_are_media_errors() -> None:
    with pytest.raises(MediaError, match=r"cannot resolve host name nowhere\.test"):
        fetch("http://nowhere.test/x", resolve=resolver({}))
    with pytest.raises(MediaError, match="has no address"):
        fetch("http://empty.test/x", resolve=resolver({"empty.test": []}))


# --- fetch_url: what goes through ------------------------------------------------------------------


def test_allowlisted_loopback_is_fetched(server: Server) -> None:
    fetched = fetch(server.url("/file.png"))
    assert fetched == Fetched(PNG, "image/png", server.url("/file.png"), "file.png")
    (seen,) = server.seen
    assert seen.headers["Host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["User-Agent"] == f"comfyjobs/{comfyjobs.__version__}"
    assert seen.headers["Accept-Encoding"] == "identity"


def test_allowlisted_host_name_lets_localhost_through(server: Server) -> None:
    fetched = fetch(server.url("/file.png", host="localhost"), UrlPolicy(["localhost"]))
    assert fetched.data == PNG
    assert server.seen[-1].headers["Host"] == f"localhost:{server.port}"


def test_connects_to_the_checked_address_with_the_name_as_host_header(server: Server) -> None:
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return ["127.0.0.1"]

    fetched = fetch(server.url("/file.png", host="media.test"), resolve=resolve)
    assert fetched.data == PNG
    assert calls == [("media.test", server.port)]
    assert server.seen[0].headers["Host"] == f"media.test:{server.port}"


def test_addresses_are_tried_in_order_until_one_connects(server: Server) -> None:
    answers = resolver({"two.test": ["127.0.0.2", "127.0.0.1"]})  # nothing listens on 127.0.0.2
    fetched = fetch(server.url("/file.png", host="two.test"), UrlPolicy(["127.0.0.0/8"]), resolve=answers)
    assert fetched.data == PNG
    assert server.paths() == ["/file.png"]


def test_connection_refused_is_a_media_error() -> None:
    with pytest.raises(MediaError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{free_port()}/file.png")


def test_https_needs_a_tls_server_with_a_trusted_certificate(server: Server) -> None:
    with pytest.raises(MediaError, match="failed"):
        fetch(f"https://127.0.0.1:{server.port}/file.png")  # this server speaks plain HTTP


def test_content_type_loses_its_parameters(server: Server) -> None:
    fetched = fetch(server.url("/text?x=1"))
    assert (fetched.data, fetched.content_type, fetched.filename) == (b"hello", "text/plain", None)
    assert server.paths() == ["/text?x=1"]


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ('attachment; filename="report.pdf"', "report.pdf"),
        ("attachment; filename*=UTF-8''na%C3%AFve.txt", "naïve.txt"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ("attachment", None),  # and /download has no dot to fall back on
    ],
)
def test_filename_from_content_disposition(server: Server, disposition: str, filename: str | None) -> None:
    assert fetch(server.url(f"/download?cd={quote(disposition)}")).filename == filename


def test_compressed_body_is_returned_as_sent(server: Server) -> None:
    fetched = fetch(server.url("/gzip"), max_bytes=10_000)
    assert gzip.decompress(fetched.data) == b"\0" * 100_000


def test_http_errors_name_the_status(server: Server) -> None:
    with pytest.raises(MediaError, match="HTTP 404 Not Found"):
        fetch(server.url("/missing"))


def test_overall_timeout(server: Server) -> None:
    with pytest.raises(MediaError, match="timed out"):
        fetch(server.url("/hang"), timeout_s=0.2)


# --- redirects -------------------------------------------------------------------------------------


def test_redirect_on_the_allowed_server_is_followed(server: Server) -> None:
    fetched = fetch(server.url("/hop"), UrlPolicy(["127.0.0.1/32"]))
    assert (fetched.data, fetched.final_url) == (PNG, server.url("/file.png"))
    assert server.paths() == ["/hop", "/file.png"]


def test_redirect_to_a_loopback_address_not_allowlisted_is_refused(server: Server) -> None:
    with pytest.raises(MediaError, match=r"127\.0\.0\.2 is a loopback address"):
        fetch(server.url("/to-other"), UrlPolicy(["127.0.0.1/32"]))
    assert server.paths() == ["/to-other"]


@pytest.mark.parametrize(
    ("path", "match"), [("/to-metadata", "metadata.test resolves to 169.254.169.254"), ("/to-file", "http")]
)
def test_redirect_targets_are_checked_like_the_first_url(server: Server, path: str, match: str) -> None:
    with pytest.raises(MediaError, match=match):
        fetch(server.url(path), resolve=resolver({"metadata.test": ["169.254.169.254"]}))
    assert server.paths() == [path]


def test_too_many_redirects(server: Server) -> None:
    with pytest.raises(MediaError, match=r"too many redirects \(more than 3\)"):
        fetch(server.url("/loop/0"), max_redirects=3)
    assert server.paths() == ["/loop/0", "/loop/1", "/loop/2", "/loop/3"]
    with pytest.raises(MediaError, match="too many redirects"):
        fetch(server.url("/hop"), max_redirects=0)


# --- byte cap --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/chunked", "/close-delimited", "/liar-length"])
def test_body_over_max_bytes_is_payload_too_large(server: Server, path: str) -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        fetch(server.url(path), max_bytes=1000)
    assert isinstance(caught.value, MediaError)
    assert server.paths() == [path]


@pytest.mark.parametrize(("path", "size"), [("/exact", 1000), ("/chunked?n=3", 3000)])
def test_body_up_to_max_bytes_is_accepted(server: Server, path: str, size: int) -> None:
    assert len(fetch(server.url(path), max_bytes=size).data) == size
