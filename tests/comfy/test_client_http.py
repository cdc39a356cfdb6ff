"""The ComfyUI client's HTTP against a local server (tests.provision.fileserver): the base URL's path is
kept (ComfyUI behind a proxy's prefix), and a server that does not answer is ComfyUnavailableError."""

from __future__ import annotations

import json

import pytest

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.errors import ComfyUnavailableError
from tests.provision.fileserver import Route, running_file_server
from tests.support import free_port


def test_a_base_url_with_a_path_keeps_it() -> None:
    stats = {"system": {}, "devices": []}
    with running_file_server() as server:
        server.routes["/comfy/system_stats"] = Route(
            body=json.dumps(stats).encode(), headers={"Content-Type": "application/json"}
        )
        client = ComfyClient(server.url("/comfy/"))
        try:
            assert client.system_stats() == stats
            assert client.answers()
        finally:
            client.close()
        assert len(server.gets("/comfy/system_stats")) == 2


def test_nothing_listening_is_comfyui_unavailable() -> None:
    client = ComfyClient(f"http://127.0.0.1:{free_port()}", request_timeout_s=2)
    try:
        assert not client.answers(timeout_s=2)
        with pytest.raises(ComfyUnavailableError, match="did not answer"):
            client.system_stats()
    finally:
        client.close()
