"""Tenants: who a request acts for. Each API key names its tenant (``API_KEYS="alice:k-alice,bob:k-bob"``;
a bare key belongs to the tenant ``default``); ``ADMIN_API_KEYS`` likewise, and an admin key sees every
tenant's tasks. A tenant sees, downloads, cancels and replays only its own tasks and assets: another
tenant's id answers exactly as an unknown one does. With no keys configured the service is open, as one
tenant with an admin's view.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from comfyjobs.errors import AuthenticationError

DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    tenant: str
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether a task or asset of ``owner`` (None: made before tenancy) is this principal's."""
        return self.admin or (owner or DEFAULT_TENANT) == self.tenant

    @property
    def owner_filter(self) -> str | None:
        """The tenant to restrict reads to; None for an admin (every tenant)."""
        return None if self.admin else self.tenant


OPEN = Principal(tenant=DEFAULT_TENANT, admin=True)  # no API_KEYS: one open service, as before

KEY_REQUIRED = "an API key is required: send `Authorization: Bearer KEY` or `X-API-Key`"
KEY_INVALID = "the API key is not valid"


def principal_for(presented: str | None, principals: dict[str, Principal]) -> Principal:
    """The key's principal (OPEN when no keys are configured); AuthenticationError for none or a wrong
    one. Every key is compared, each in constant time, so timing tells nothing about which one nearly
    matched."""
    if not principals:
        return OPEN
    if presented is None:
        raise AuthenticationError(KEY_REQUIRED)
    found: Principal | None = None
    for key, principal in principals.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = principal
    if found is None:
        raise AuthenticationError(KEY_INVALID)
    return found


def parse_keys(text: str, *, admin: bool, setting: str) -> dict[str, Principal]:
    """``tenant:key`` or bare ``key`` entries, comma-separated → key → Principal. ValueError names the
    setting and the entry (never the key itself)."""
    found: dict[str, Principal] = {}
    for index, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        tenant, sep, key = entry.partition(":")
        if not sep:
            tenant, key = DEFAULT_TENANT, entry
        tenant, key = tenant.strip(), key.strip()
        if not TENANT_NAME.match(tenant):
            raise ValueError(
                f"{setting}: entry {index} names tenant {tenant[:40]!r}; tenant names are letters, digits, "
                "'.', '_' and '-' (at most 64)"
            )
        if not key:
            raise ValueError(f"{setting}: entry {index} (tenant {tenant}) has no key")
        if key in found:
            raise ValueError(f"{setting}: entry {index} repeats a key given before")
        found[key] = Principal(tenant=tenant, admin=admin)
    return found
