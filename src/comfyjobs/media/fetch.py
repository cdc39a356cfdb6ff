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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException
from urllib.parse import unquote, urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

import comfyjobs
from comfyjobs.errors import MediaError, PayloadTooLargeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # host, port -> IP address strings

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_HEADERS = {"User-Agent": f"comfyjobs/{comfyjobs.__version__}", "Accept-Encoding": "identity"}
# Any of these while talking to the server is a failed fetch (they never escape as themselves).
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, HTTPException, OSError, ValueError)


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None  # from the response's Content-Type, without parameters
    final_url: str  # after redirects
    filename: str | None  # Content-Disposition filename, else the final URL's last segment if it has a dot


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address; the server half is a relay
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refusal(address: IPAddress) -> str | None:
    """What makes an address unreachable for URL inputs ("a loopback address"), or None if it is public."""
    kinds = (
        ("an unspecified address", address.is_unspecified),
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a reserved address", address.is_reserved),
        ("a private address", address.is_private),
        ("a shared (carrier-grade NAT) address", address.version == 4 and address in _SHARED),
        ("not a public address", not address.is_global),
    )
    return next((kind for kind, applies in kinds if applies), None)


class UrlPolicy:
    """Where URL inputs may connect: every public address, plus the non-public ones allowlisted by
    network ("10.0.0.0/8", "::1", "127.0.0.1") or by the URL's host name ("minio.internal", exact and
    case-insensitive)."""

    def __init__(self, allowlist: Sequence[str] = (), setting: str = "INPUT_URL_ALLOWLIST") -> None:
        self._hint = f"(allow it with {setting})"
        if isinstance(allowlist, str):
            raise TypeError("allowlist is a sequence of entries, not one string")
        self._hosts: set[str] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in allowlist:
            entry = raw.strip()
            if not entry:
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or ":" in entry or any(c.isspace() for c in entry):
                    raise ValueError(f"allowlist entry {entry!r} is not a host name, IP or CIDR") from None
                self._hosts.add(entry.lower().rstrip("."))

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raises MediaError unless a connection for ``host`` may go to ``address``."""
        name = host.strip("[]").lower().rstrip(".")
        if name in self._hosts:
            return
        embedded = _embedded_ipv4(address)
        candidates = [address] if embedded is None else [address, embedded]
        if any(a in network for a in candidates for network in self._networks):
            return
        kind = _refusal(embedded or address)
        if kind is None:
            return
        shown = str(address) if embedded is None else f"{address} (embedding {embedded})"
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise MediaError(f"refused: {_clip(name)} resolves to {shown}, {kind} {self._hint}") from None
        raise MediaError(f"refused: {shown} is {kind} {self._hint}")


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # lower-case ASCII (IDNA), IPv6 without brackets
    port: int
    path: str  # request target: path and query

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


def _parse(url: str) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise MediaError(f"invalid URL {_clip(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise MediaError(f"refused: only http and https URLs can be fetched, not {_clip(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise MediaError("refused: URLs with a user name or password are not accepted")
    host = parts.hostname or ""
    if not host:
        raise MediaError(f"refused: the URL has no host: {_clip(url)!r}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise MediaError(f"invalid host name in {_clip(url)!r}") from None
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
            raise MediaError(f"cannot resolve host {_clip(target.host)!r}") from exc
    addresses: list[IPAddress] = []
    for text in dict.fromkeys(texts):
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise MediaError(f"host {_clip(target.host)!r} resolved to a non-address {text[:60]!r}") from None
    if not addresses:
        raise MediaError(f"host {_clip(target.host)!r} has no address")
    for address in addresses:
        policy.check_address(target.host, address)
    return addresses


def _remaining(deadline: float, timeout_s: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise MediaError(f"timed out after {timeout_s:g} s fetching {_clip(url)}")
    return left


def _failure(exc: Exception, timeout_s: float, url: str) -> MediaError:
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError):
        return MediaError(f"timed out after {timeout_s:g} s fetching {_clip(url)}")
    detail = exc.args[0] if len(exc.args) == 2 and isinstance(exc.args[0], str) else str(exc)  # ProtocolError
    return MediaError(f"fetching {_clip(url)} failed: {_clip(detail or type(exc).__name__)}")


def _open(
    target: _Target,
    addresses: list[IPAddress],
    deadline: float,
    timeout_s: float,
    method: str = "GET",
    body: bytes | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> tuple[urllib3.BaseHTTPResponse, urllib3.HTTPConnectionPool]:
    headers = {**_HEADERS, **(extra_headers or {}), "Host": target.host_header}
    reason = "no address"
    for address in addresses:
        left = _remaining(deadline, timeout_s, target.url)
        timeout = urllib3.Timeout(connect=left, read=left)
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
            reason = "connection timed out"
            if isinstance(exc, NewConnectionError) and isinstance(exc.__cause__, OSError):
                reason = exc.__cause__.strerror or str(exc.__cause__)
        except _TRANSPORT_ERRORS as exc:
            pool.close()
            raise _failure(exc, timeout_s, target.url) from exc
        else:
            return response, pool
    raise MediaError(f"could not connect to {_clip(target.host_header)}: {reason}")


def _read_body(
    response: urllib3.BaseHTTPResponse, url: str, max_bytes: int, deadline: float, timeout_s: float
) -> bytes:
    length = (response.headers.get("Content-Length") or "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLargeError(f"{_clip(url)} is {int(length)} bytes, over the limit of {max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while True:
        left = _remaining(deadline, timeout_s, url)
        sock = getattr(response.connection, "sock", None)
        if isinstance(sock, socket.socket):
            sock.settimeout(left)  # each read waits no longer than the overall deadline allows
        try:
            chunk = response.read1(min(_CHUNK, max_bytes - total + 1), decode_content=False)
        except _TRANSPORT_ERRORS as exc:
            raise _failure(exc, timeout_s, url) from exc
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(f"{_clip(url)} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)


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
    deadline = time.monotonic() + timeout_s
    current = url
    for _ in range(max_redirects + 1):
        target = _parse(current)
        addresses = _checked_addresses(target, policy, resolve or _system_resolve)
        response, pool = _open(target, addresses, deadline, timeout_s)
        try:
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                current = urljoin(current, location.strip())
                continue
            if not 200 <= response.status < 300:
                status = f"{response.status} {response.reason or ''}".strip()
                raise MediaError(f"fetching {_clip(current)} failed: the server answered HTTP {status}")
            data = _read_body(response, current, max_bytes, deadline, timeout_s)
            content_type = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            filename = _filename(response.headers.get("Content-Disposition"), current)
            return Fetched(data, content_type or None, current, filename)
        finally:
            response.close()
            pool.close()
    raise MediaError(f"too many redirects (more than {max_redirects}) fetching {_clip(url)}")


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
    deadline = time.monotonic() + timeout_s
    target = _parse(url)
    addresses = _checked_addresses(target, policy, resolve or _system_resolve)
    response, pool = _open(target, addresses, deadline, timeout_s, "POST", body, headers)
    try:
        # Its status is all we want: a long or stalled answer after it changes nothing.
        with contextlib.suppress(MediaError):
            _read_body(response, url, _CHUNK, deadline, timeout_s)
        return response.status
    finally:
        response.release_conn()
        pool.close()
