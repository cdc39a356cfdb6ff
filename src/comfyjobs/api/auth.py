"""Who a request acts for: with API_KEYS (and ADMIN_API_KEYS) set, a request needs a key, as a bearer
token or an X-API-Key header, and the key names its tenant (see comfyjobs.tenancy)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from comfyjobs.api.limits import presented_key
from comfyjobs.api.services import Services, services
from comfyjobs.errors import AuthenticationError
from comfyjobs.tenancy import OPEN, Principal


def principal_for(presented: str | None, principals: dict[str, Principal]) -> Principal:
    """The key's principal; AuthenticationError for none or a wrong one. Every key is compared, each in
    constant time, so timing tells nothing about which one nearly matched."""
    if not principals:
        return OPEN
    if presented is None:
        raise AuthenticationError("an API key is required: send `Authorization: Bearer KEY` or `X-API-Key`")
    found: Principal | None = None
    for key, principal in principals.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = principal
    if found is None:
        raise AuthenticationError("the API key is not valid")
    return found


async def current_principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """Who the request acts for; each request takes one of that tenant's tokens (TENANT_RATE_PER_S)."""
    principal = principal_for(presented_key(request.headers), svc.settings.principals)
    await svc.rate.take(principal.tenant)
    return principal


# FastAPI runs a dependency once per request, so the router-level check and a route's parameter share it.
require_api_key = current_principal
Caller = Annotated[Principal, Depends(current_principal)]
