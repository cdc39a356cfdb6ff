"""API keys: with API_KEYS set, a request needs one, as a bearer token or an X-API-Key header."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from comfyjobs.api.services import Services, services
from comfyjobs.errors import AuthenticationError


def _presented_key(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


async def require_api_key(request: Request, svc: Annotated[Services, Depends(services)]) -> None:
    accepted = svc.settings.accepted_api_keys
    if not accepted:
        return
    presented = _presented_key(request)
    if presented is None:
        raise AuthenticationError("an API key is required: send `Authorization: Bearer KEY` or `X-API-Key`")
    # Compare against every key in constant time, so timing tells nothing about which one nearly matched.
    if not any(hmac.compare_digest(presented.encode(), key.encode()) for key in accepted):
        raise AuthenticationError("the API key is not valid")
