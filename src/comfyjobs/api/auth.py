"""Who a request acts for: with API_KEYS (and ADMIN_API_KEYS) set, a request needs a key, as a bearer
token or an X-API-Key header, and the key names its tenant (see comfyjobs.tenancy). The request-limits
middleware (api.limits) checks the key before any body byte is read and leaves the principal in the
request's state; the dependency here takes it from there."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from comfyjobs.api.limits import presented_key
from comfyjobs.api.services import Services, services
from comfyjobs.tenancy import Principal, principal_for


async def current_principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """Who the request acts for; each request takes one of that tenant's tokens (TENANT_RATE_PER_S)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # an app without the middleware (it is installed by create_app)
        principal = principal_for(presented_key(request.headers), svc.settings.principals)
    await svc.rate.take(principal.tenant)
    return principal


# FastAPI runs a dependency once per request, so the router-level check and a route's parameter share it.
require_api_key = current_principal
Caller = Annotated[Principal, Depends(current_principal)]
