"""Fetch a user-supplied http(s) URL without letting it reach the service's own network (SSRF).

* The host is resolved once (``resolve``; by default ``socket.getaddrinfo``, both families) and *every*
  address is judged by :class:`UrlPolicy` before anything connects: one refused address refuses the URL,
  so a name cannot hide a private address next to a public one. IPv4 embedded in IPv6 (mapped
  ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64 ``64:ff9b::/96``) is judged as that IPv4 address.
* The connection goes to the exact address that was checked (a urllib3 pool on the IP; the ``Host``
  header, SNI and certificate check use the name), so no second DNS answer can rebind the name in
  between. The checked addresses are tried in order until one connects.
* urllib3 follows no redirects and retries nothing: each ``Location`` is resolved against the current URL
  and goes through the same checks (scheme, DNS, every address), at most ``max_redirects`` times.
* The body is read chunk by chunk with ``decode_content=False`` after asking for ``identity``: the cap
  counts bytes as sent, so a compressed bomb never expands here. A ``Content-Length`` over the cap is
  refused before reading.
* ``timeout_s`` bounds each connect and each socket read, and is an overall deadline for the whole fetch,
  checked before every connect and every read (a server trickling its status line and headers byte by
  byte is bounded per read only).

Every refusal or failure is a :class:`MediaError` (:class:`PayloadTooLargeError` for the cap) whose
message says why in a sentence and quotes at most 200 characters of the URL. Blocking: call it in a thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException
from urllib.parse import unquote, urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

import comfyjobs
from comfyjobs.errors import BodyCutError, MediaError, PayloadTooLargeError
from comfyjobs.media.url_policy import IPAddress, UrlPolicy, clip

Resolver = Callable[[str, int], list[str]]  # host, port -> IP address strings

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_HEADERS = {"User-Agent": f"comfyjobs/{comfyjobs.__version__}", "Accept-Encoding": "identity"}
# Any of these while talking to the server is a failed fetch (they never escape as themselves).
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, HTTPException, OSError, ValueError)


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None  # from the response's Content-Type, without parameters
    final_url: str  # after redirects
    filename: str | None  # Content-Disposition filename, else the final URL's last segment if it has a dot


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # lower-case ASCII (IDNA), IPv6 without brackets
    port: int
    path: str  # request target: path and query

    @property
    def authority(self) -> str:
        """host:port, always with the port (what a connection goes to)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        default = self.port == (443 if self.scheme == "https" else 80)
        return self.authority.rsplit(":", 1)[0] if default else self.authority


def _parse(url: str) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise MediaError(f"invalid URL {clip(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise MediaError(f"refused: only http and https URLs can be fetched, not {clip(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise MediaError("refused: URLs with a user name or password are not accepted")
    host = parts.hostname or ""
    if not host:
        raise MediaError(f"refused: the URL has no host: {clip(url)!r}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise MediaError(f"invalid host name in {clip(url)!r}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(url, scheme, host, port or (443 if scheme == "https" else 80), path)


def _system_resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _checked_addresses(target: _Target, policy: UrlPolicy, resolve: Resolver) -> list[IPAddress]:
    try:
        texts = [str(ipaddress.ip_address(target.host))]
    except ValueError:
        try:
            texts = resolve(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
            raise MediaError(f"cannot resolve host name {clip(target.host)}: {reason}") from exc
    addresses: list[IPAddress] = []
    for text in dict.fromkeys(texts):
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise MediaError(f"host {clip(target.host)!r} resolved to a non-address {text[:60]!r}") from None
    if not addresses:
        raise MediaError(f"host {clip(target.host)!r} has no address")
    for address in addresses:
        policy.check_address(target.host, address)
    return addresses


@dataclass(frozen=True)
class _Timing:
    """How long each step may wait: with an overall deadline (a media fetch: the whole fetch within
    ``timeout_s``), or per step only (a model download of many minutes: ``connect_s`` per connect,
    ``timeout_s`` per read)."""

    timeout_s: float
    connect_s: float
    deadline: float | None

    @classmethod
    def overall(cls, timeout_s: float) -> _Timing:
        return cls(timeout_s, timeout_s, time.monotonic() + timeout_s)

    def left(self, url: str, *, connecting: bool = False) -> float:
        step = self.connect_s if connecting else self.timeout_s
        if self.deadline is None:
            return step
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise MediaError(f"timed out after {self.timeout_s:g} s fetching {clip(url)}")
        return min(left, step)


def _failure(exc: Exception, timing: _Timing, url: str) -> MediaError:
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError):
        return MediaError(f"timed out after {timing.timeout_s:g} s fetching {clip(url)}")
    detail = exc.args[0] if len(exc.args) == 2 and isinstance(exc.args[0], str) else str(exc)  # ProtocolError
    return MediaError(f"fetching {clip(url)} failed: {clip(detail or type(exc).__name__)}")


def _open(
    target: _Target,
    addresses: list[IPAddress],
    timing: _Timing,
    method: str = "GET",
    body: bytes | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> tuple[urllib3.BaseHTTPResponse, urllib3.HTTPConnectionPool]:
    headers = {**_HEADERS, **(extra_headers or {}), "Host": target.host_header}
    reason = "no address"
    for address in addresses:
        connect_s = timing.left(target.url, connecting=True)
        timeout = urllib3.Timeout(connect=connect_s, read=timing.left(target.url))
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                str(address),
                target.port,
                timeout=timeout,
                retries=False,
                maxsize=1,
                server_hostname=target.host,
                assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
            )
        else:
            pool = urllib3.HTTPConnectionPool(str(address), target.port, timeout=timeout, retries=False)
        try:
            response = pool.urlopen(
                method,
                target.path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
                release_conn=False,
            )
        except ConnectTimeoutError as exc:  # NewConnectionError too: try the next address
            pool.close()
            reason = f"no answer within {connect_s:g} s (host down or unreachable)"
            if isinstance(exc, NewConnectionError) and isinstance(exc.__cause__, OSError):
                reason = exc.__cause__.strerror or str(exc.__cause__)
        except _TRANSPORT_ERRORS as exc:
            pool.close()
            raise _failure(exc, timing, target.url) from exc
        else:
            return response, pool
    raise MediaError(f"cannot connect to {clip(target.authority)}: {reason}")


def _read_chunk(response: urllib3.BaseHTTPResponse, url: str, size: int, timing: _Timing) -> bytes:
    """The next bytes of the body (b"" at its end); BodyCutError when the connection fails."""
    left = timing.left(url)
    sock = getattr(response.connection, "sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(left)  # each read waits no longer than the deadline allows
    try:
        return response.read1(size, decode_content=False)
    except _TRANSPORT_ERRORS as exc:
        raise BodyCutError(_failure(exc, timing, url).message) from exc


def _read_body(response: urllib3.BaseHTTPResponse, url: str, max_bytes: int, timing: _Timing) -> bytes:
    length = (response.headers.get("Content-Length") or "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLargeError(f"{clip(url)} is {int(length)} bytes, over the limit of {max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while chunk := _read_chunk(response, url, min(_CHUNK, max_bytes - total + 1), timing):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(f"{clip(url)} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _safe_name(name: str | None) -> str | None:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return None if base in ("", ".", "..") else base


def _filename(disposition: str | None, final_url: str) -> str | None:
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        try:
            name = _safe_name(message.get_filename())
        except (ValueError, LookupError):
            name = None
        if name:
            return name
    last = _safe_name(unquote(urlsplit(final_url).path))
    return last if last and "." in last else None


HeadersFor = Callable[[str], Mapping[str, str]]  # host name -> headers for a request to it (credentials)


def _no_headers(_host: str) -> Mapping[str, str]:
    return {}


@contextlib.contextmanager
def _follow(
    url: str,
    policy: UrlPolicy,
    timing: _Timing,
    headers: Mapping[str, str],
    headers_for: HeadersFor,
    max_redirects: int,
    resolve: Resolver | None,
) -> Iterator[tuple[urllib3.BaseHTTPResponse, str]]:
    """The first answer that is not a redirect, and the URL that gave it: every hop checked."""
    current = url
    for _ in range(max_redirects + 1):
        target = _parse(current)
        addresses = _checked_addresses(target, policy, resolve or _system_resolve)
        hop_headers = {**headers, **headers_for(target.host)}  # credentials only to the host they are for
        response, pool = _open(target, addresses, timing, extra_headers=hop_headers)
        try:
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                current = urljoin(current, location.strip())
                continue
            yield response, current
            return
        finally:
            response.close()
            pool.close()
    raise MediaError(f"too many redirects (more than {max_redirects}) fetching {clip(url)}")


def fetch_url(
    url: str,
    *,
    policy: UrlPolicy,
    max_bytes: int,
    timeout_s: float,
    max_redirects: int = 5,
    resolve: Resolver | None = None,
) -> Fetched:
    """GETs ``url`` (following checked redirects) and returns its body; raises MediaError otherwise."""
    timing = _Timing.overall(timeout_s)
    with _follow(url, policy, timing, {}, _no_headers, max_redirects, resolve) as (response, current):
        if not 200 <= response.status < 300:
            status = f"{response.status} {response.reason or ''}".strip()
            raise MediaError(f"fetching {clip(current)} failed: the server answered HTTP {status}")
        data = _read_body(response, current, max_bytes, timing)
        content_type = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        filename = _filename(response.headers.get("Content-Disposition"), current)
        return Fetched(data, content_type or None, current, filename)


@dataclass(frozen=True)
class Stream:
    """An answer whose body is read as it comes (``open_stream``): whatever its status."""

    status: int
    reason: str
    headers: Mapping[str, str]  # (case-insensitive)
    url: str  # after redirects
    _response: urllib3.BaseHTTPResponse
    _timing: _Timing

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body, ``size`` bytes at most at a time; BodyCutError if the connection fails."""
        while chunk := _read_chunk(self._response, self.url, size, self._timing):
            yield chunk


@contextlib.contextmanager
def open_stream(
    url: str,
    *,
    policy: UrlPolicy,
    connect_timeout_s: float,
    read_timeout_s: float,
    headers: Mapping[str, str] | None = None,
    headers_for: HeadersFor = _no_headers,
    max_redirects: int = 5,
    resolve: Resolver | None = None,
) -> Iterator[Stream]:
    """GETs ``url`` through the same guard as ``fetch_url`` (every redirect checked), waiting at most
    ``connect_timeout_s`` per connect and ``read_timeout_s`` per read (no overall deadline: a large file
    takes what it takes). ``headers_for(host)`` adds headers for one host only (a token is never sent on
    to another host a redirect leads to). Raises MediaError when refused or unreachable."""
    timing = _Timing(read_timeout_s, connect_timeout_s, None)
    with _follow(url, policy, timing, headers or {}, headers_for, max_redirects, resolve) as (
        response,
        final,
    ):
        yield Stream(response.status, response.reason or "", response.headers, final, response, timing)


def check_url(url: str, policy: UrlPolicy, resolve: Resolver | None = None) -> None:
    """Raises MediaError unless ``url`` is an http(s) URL whose host resolves only to addresses
    ``policy`` lets a connection reach (blocking: it resolves the name)."""
    _checked_addresses(_parse(url), policy, resolve or _system_resolve)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    policy: UrlPolicy,
    timeout_s: float,
    resolve: Resolver | None = None,
) -> int:
    """POSTs ``body`` to ``url`` through the same guard as a fetch (the connection goes to the checked
    address; redirects are not followed) and returns the HTTP status; raises MediaError when refused
    or unreachable. The answer's body is read up to a small limit and dropped."""
    timing = _Timing.overall(timeout_s)
    target = _parse(url)
    addresses = _checked_addresses(target, policy, resolve or _system_resolve)
    response, pool = _open(target, addresses, timing, "POST", body, headers)
    try:
        # Its status is all we want: a long or stalled answer after it changes nothing.
        with contextlib.suppress(MediaError):
            _read_body(response, url, _CHUNK, timing)
        return response.status
    finally:
        response.release_conn()
        pool.close()
