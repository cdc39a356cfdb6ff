"""Where a URL given by a client may lead a connection: :class:`UrlPolicy` judges each address a host
name resolves to (``media.fetch`` connects only to addresses it allowed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from comfyjobs.errors import MediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


def clip(text: str, limit: int = 200) -> str:
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

    @classmethod
    def anywhere(cls) -> UrlPolicy:
        """Every address: for URLs an operator wrote (models.ini), never for a client's."""
        return cls(["0.0.0.0/0", "::/0"])

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
            raise MediaError(f"refused: {clip(name)} resolves to {shown}, {kind} {self._hint}") from None
        raise MediaError(f"refused: {shown} is {kind} {self._hint}")
