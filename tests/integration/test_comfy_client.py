"""The ComfyUI client against the session worker's real ComfyUI."""

from __future__ import annotations

import pytest

from comfyjobs.comfy.client import ComfyClient, ComfyEvent
from comfyjobs.errors import ComfyPromptRejectedError
from tests.integration.conftest import Service
from tests.support import wait_for


@pytest.fixture
def comfy(service: Service) -> ComfyClient:
    return ComfyClient(f"http://127.0.0.1:{service.env['COMFYUI_BASE_PORT']}")


def test_a_graph_comfyui_refuses_names_the_node(comfy: ComfyClient) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": -5, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["1", 0]}},
    }
    with pytest.raises(ComfyPromptRejectedError) as caught:
        comfy.run(graph, on_event=lambda _: None, timeout_s=60)
    assert caught.value.node_id == "1"
    assert caught.value.node_type == "EmptyImage"
    assert "width" in caught.value.message


def test_a_fully_cached_run_still_returns_its_outputs(comfy: ComfyClient) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "cached", "images": ["1", 0]}},
    }
    events: list[ComfyEvent] = []
    first = comfy.run(graph, on_event=events.append, timeout_s=60)
    second = comfy.run(graph, on_event=events.append, timeout_s=60)  # served from ComfyUI's cache
    assert first == second
    assert [o.node_id for o in first] == ["2"]


def test_a_graph_comfyui_accepts_only_in_part_is_refused_whole(comfy: ComfyClient) -> None:
    # Two outputs, one invalid: ComfyUI would queue the valid half and silently drop the other.
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ok", "images": ["1", 0]}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": -1, "height": 8, "batch_size": 1, "color": 1}},
        "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bad", "images": ["3", 0]}},
    }
    with pytest.raises(ComfyPromptRejectedError) as caught:
        comfy.run(graph, on_event=lambda _: None, timeout_s=60)
    assert caught.value.node_id == "3"

    # Taken back at once; an interrupt of a prompt ComfyUI had already started lands a moment later.
    def drained() -> bool:
        queue = comfy._json("/queue")
        return queue["queue_running"] == [] and queue["queue_pending"] == []

    wait_for(drained, timeout_s=30, what="ComfyUI's queue to empty")
