"""A ComfyUI custom node package (no nodes) that each worker loads into the ComfyUI it owns: its HTTP
server then refuses any request whose Host, or Origin when sent, is not its own loopback address.

Loopback is not a trust boundary: a web page on this machine can make a browser send requests to
127.0.0.1, and a DNS name that resolves to 127.0.0.1 (DNS rebinding) makes them same-origin for the page.
ComfyUI itself only compares Host with Origin when Host is a loopback name, so `Host: evil.example:8188`
passes there. This middleware answers 403 instead. The worker passes the port in COMFYJOBS_COMFYUI_PORT
(see comfy.process.ComfyInstance); ComfyUI loads the package from the custom_nodes folder the worker's
extra_model_paths.yaml names. It is the one piece of comfyjobs that runs inside ComfyUI, through
ComfyUI's documented extension point (a custom node package), never by changing ComfyUI's files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

NODE_CLASS_MAPPINGS: dict[str, object] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def refusal(host: str | None, origin: str | None, allowed: frozenset[str]) -> str | None:
    """Why a request with these headers is refused, or None."""
    if (host or "").lower() not in allowed:
        return f"Host {host!r} is not this ComfyUI's loopback address"
    if origin is not None and origin != "null":
        netloc = urlsplit(origin).netloc.lower()
        if netloc not in allowed:
            return f"Origin {origin!r} is not this ComfyUI"
    return None


def host_guard(allowed: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        why = refusal(request.headers.get("Host"), request.headers.get("Origin"), allowed)
        if why is not None:
            log.warning("comfyjobs guard: refused %s %s: %s", request.method, request.path, why)
            return web.Response(status=403, text=f"refused: {why}\n")
        return await handler(request)

    return guard


def _install() -> None:
    port = os.environ.get("COMFYJOBS_COMFYUI_PORT")
    if not port or not port.isdigit():
        return  # not started by a comfyjobs worker: leave this ComfyUI as it is
    from server import PromptServer  # ComfyUI's, present when ComfyUI loads this package

    PromptServer.instance.app.middlewares.insert(0, host_guard(allowed_hosts(int(port))))
    log.info(
        "comfyjobs guard: only Host/Origin 127.0.0.1:%s, localhost:%s, [::1]:%s are served", port, port, port
    )


_install()
