"""A worker's ComfyUI serves only requests addressed to its own loopback address (DNS rebinding, and pages
in a local browser posting to 127.0.0.1, are refused), while the worker itself is served as before."""

from __future__ import annotations

import http.client

from tests.integration.conftest import Service


def status(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/system_stats", skip_host=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_only_its_own_address_is_served(service: Service) -> None:
    port = int(service.env["COMFYUI_BASE_PORT"])  # the CPU worker's ComfyUI
    assert status(port, {"Host": f"127.0.0.1:{port}"}) == 200
    assert status(port, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}) == 200
    assert status(port, {"Host": f"rebound.example:{port}"}) == 403  # a name that resolved to 127.0.0.1
    assert status(port, {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"}) == 403
    assert status(port, {}) in (400, 403)  # no Host at all: aiohttp itself refuses an HTTP/1.1 request
