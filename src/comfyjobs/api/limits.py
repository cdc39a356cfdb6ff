"""Limits before work: what a request may cost the API before any route runs.

Guards memory and event-loop time against hostile or broken clients. Measured without it: eight
unauthenticated 100 MB POSTs took the API from 118 MB to 3.1 GB and stalled /health for 8.5 s, because
bodies were read and parsed, with no size limit, before the API key was checked.

One pure ASGI middleware (``install_limits``), outermost of the app's own middleware, per HTTP request:

- **Key first.** With API_KEYS set, a request to a keyed route without a valid key (``Authorization:
  Bearer`` or ``X-API-Key``, compared in constant time) is answered 401 before a single body byte is
  read, and the connection is closed if a body was announced (so it is not drained either). Open: /health,
  /ready, the docs, and GET/HEAD of the signed links /outputs/... and /inputs/... (their signature is
  their credential). Unknown paths need a key too (401, not 404).
- **Size while reading.** A body may hold MAX_BODY_BYTES; ``POST /assets`` MAX_UPLOAD_BYTES (default
  INPUT_MAX_BYTES + 1 MiB of multipart framing). A Content-Length over the cap is refused at once; a
  chunked body as soon as its bytes cross it. 413 ``payload_too_large``.
- **Time while reading.** Each wait for the next piece of an unfinished body is bounded by
  API_BODY_TIMEOUT_S: a stalled client gets 408 ``request_timeout``. Once the body is complete, reads pass
  through untimed (they are how a streaming response learns of a disconnect).

A refusal mid-body is sent by the middleware itself (with ``Connection: close``); from then on the app's
reads return ``http.disconnect`` and whatever it still sends is dropped. A response the app starts before
reading its whole body also gets ``Connection: close``, so the unread rest is never drained.

Connections themselves (header timeouts, idle sockets, how many may be open) are bounded in the server:
see ``comfyjobs.api.serve``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyjobs.api.errors import error_response
from comfyjobs.errors import AuthenticationError, PayloadTooLargeError
from comfyjobs.settings import Settings
from comfyjobs.tenancy import OPEN, Principal, principal_for

log = logging.getLogger(__name__)

MULTIPART_ALLOWANCE = 1024 * 1024  # a POST /assets body is the file plus its multipart framing
UPLOAD_ROUTE = ("POST", "/assets")
SIGNED_PREFIXES = ("/outputs/", "/inputs/")
SIGNED_METHODS = frozenset({"GET", "HEAD"})
KEYLESS_PATHS = frozenset({"/health", "/ready"})
UI_PAGES = "/ui"


# --- API keys: the one parser, shared with comfyjobs.api.auth ------------------------------------------


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: a bearer token, else the X-API-Key header (``headers`` case-insensitive,
    as Starlette's are)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key")


def key_problem(presented: str | None, accepted: frozenset[str]) -> str | None:
    """Why ``presented`` does not open a keyed route, or None if it does (or no keys are configured)."""
    try:
        principal_for(presented, dict.fromkeys(accepted, OPEN))
    except AuthenticationError as exc:
        return exc.message
    return None


def upload_cap(settings: Settings) -> int:
    """Largest POST /assets body: MAX_UPLOAD_BYTES, or INPUT_MAX_BYTES plus the multipart framing."""
    if settings.max_upload_bytes is not None:
        return settings.max_upload_bytes
    return settings.input_max_bytes + MULTIPART_ALLOWANCE


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Adds the middleware; call in create_app, after the routers (before the app first serves). Once per
    app: a second call does nothing."""
    if getattr(app.state, "request_limits", False):
        return
    app.state.request_limits = True
    docs = [app.docs_url, app.redoc_url, app.openapi_url]
    if app.docs_url:
        docs.append(app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        RequestLimits,
        principals=settings.principals,  # parsed once here, not per request
        keyless_paths=KEYLESS_PATHS | {path for path in docs if path},
        body_cap=settings.max_body_bytes,
        upload_cap=upload_cap(settings),
        body_timeout_s=settings.api_body_timeout_s,
    )


# --- The middleware ----------------------------------------------------------------------------------


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        principals: dict[str, Principal],
        keyless_paths: frozenset[str],
        body_cap: int,
        upload_cap: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.principals = principals
        self.keyless_paths = keyless_paths
        self.body_cap = body_cap
        self.upload_cap = upload_cap
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method: str = scope["method"]
        path = _route_path(scope)
        length = _content_length(headers)
        announces_body = bool(length) or "transfer-encoding" in headers

        if not self._keyless(method, path):
            try:
                principal = principal_for(presented_key(headers), self.principals)
            except AuthenticationError as exc:
                await _reply(send, error_response(exc), close=announces_body)
                return
            scope.setdefault("state", {})["principal"] = principal  # request.state.principal (api.auth)

        if (method, path) == UPLOAD_ROUTE:
            cap, cap_name = self.upload_cap, "MAX_UPLOAD_BYTES"
        else:
            cap, cap_name = self.body_cap, "MAX_BODY_BYTES"
        if length is not None and length > cap:
            await _reply(send, _too_large(cap_name, cap), close=True)
            return

        guard = _BodyGuard(receive, send, cap, cap_name, self.body_timeout_s, announces_body)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.replied:
                raise
            # The app failed on the disconnect we handed it after answering for it: nothing to report.
            log.debug("%s %s ended after its body was refused", method, path, exc_info=True)

    def _keyless(self, method: str, path: str) -> bool:
        if method in SIGNED_METHODS and (path == UI_PAGES or path.startswith(f"{UI_PAGES}/")):
            return True  # the web app's static pages (they hold no data)
        return path in self.keyless_paths or (method in SIGNED_METHODS and path.startswith(SIGNED_PREFIXES))


class _BodyGuard:
    """The app's receive and send for one request: counts and times the body, answers 413/408 itself."""

    def __init__(
        self, receive: Receive, send: Send, cap: int, cap_name: str, timeout_s: float, announces_body: bool
    ) -> None:
        self._receive = receive
        self._send = send
        self._cap = cap
        self._cap_name = cap_name
        self._timeout_s = timeout_s
        self._received = 0
        self._body_done = not announces_body
        self._refused = False
        self._response_started = False
        self.replied = False  # we sent the response in the app's place

    async def receive(self) -> Message:
        if self._refused:
            return {"type": "http.disconnect"}
        if self._body_done:
            return await self._receive()  # untimed: a streaming response waits here for a disconnect
        try:
            async with asyncio.timeout(self._timeout_s):
                message = await self._receive()
        except TimeoutError:
            return await self._refuse(_timed_out(self._timeout_s))
        if message["type"] != "http.request":
            self._body_done = True
            return message
        self._received += len(message.get("body", b""))
        if self._received > self._cap:
            return await self._refuse(_too_large(self._cap_name, self._cap))
        if not message.get("more_body", False):
            self._body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self.replied:
            return
        if message["type"] == "http.response.start":
            self._response_started = True
            if not self._body_done:  # answered before reading it all: close rather than drain the rest
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)

    async def _refuse(self, response: JSONResponse) -> Message:
        self._refused = True
        if not self._response_started:  # the app has not answered (it cannot have: it is still reading)
            self._response_started = self.replied = True
            await _reply(self._send, response, close=True)
        return {"type": "http.disconnect"}


# --- Helpers ------------------------------------------------------------------------------------------


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # absent or malformed (the HTTP parser refuses a malformed one with 400 first)
    return int(value)


def _too_large(cap_name: str, cap: int) -> JSONResponse:
    return error_response(PayloadTooLargeError(f"the request body is over {cap_name} ({cap} bytes)"))


def _timed_out(timeout_s: float) -> JSONResponse:
    message = f"the request body stalled: nothing arrived for API_BODY_TIMEOUT_S ({timeout_s:g} s)"
    return JSONResponse({"error": {"code": "request_timeout", "message": message}}, status_code=408)


async def _reply(send: Send, response: JSONResponse, *, close: bool) -> None:
    headers = list(response.raw_headers)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
