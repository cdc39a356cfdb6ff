"""The websocket feed's routing, without a socket: what a run reads reaches its subscription, in order;
what none reads is dropped unparsed."""

from __future__ import annotations

import json

from comfyjobs.comfy.feed import PromptFeed, Subscription


def test_messages_no_run_reads_are_dropped_and_the_rest_handed_on_in_order() -> None:
    feed = PromptFeed("ws://127.0.0.1:1/ws")
    mine = Subscription("p1")
    feed._subscriptions["p1"] = mine  # as subscribe() does, without connecting
    sent = [
        ("status", {"status": {"exec_info": {"queue_remaining": 1}}}),
        ("execution_start", {"prompt_id": "p1"}),
        ("execution_cached", {"nodes": [], "prompt_id": "p1"}),
        ("progress_state", {"prompt_id": "p1", "nodes": {}}),
        ("executing", {"node": "1", "prompt_id": "p1"}),
        ("progress", {"value": 1, "max": 4, "node": "1", "prompt_id": "p1"}),
        ("executed", {"node": "2", "output": {"images": []}, "prompt_id": "p1"}),
        ("executing", {"node": "2", "prompt_id": "p2"}),  # another prompt's
        ("execution_success", {"prompt_id": "p1"}),
        ("executing", {"node": None, "prompt_id": "p1"}),
    ]
    for kind, data in sent:
        feed._route_text(json.dumps({"type": kind, "data": data}))  # as ComfyUI writes them

    received = []
    while (message := mine.get(0)) is not None:
        received.append((message.kind, message.data))
    assert received == [
        ("execution_start", {"prompt_id": "p1"}),
        ("executing", {"node": "1", "prompt_id": "p1"}),
        ("progress", {"value": 1, "max": 4, "node": "1", "prompt_id": "p1"}),
        ("executed", {"node": "2", "output": {"images": []}, "prompt_id": "p1"}),
        ("executing", {"node": None, "prompt_id": "p1"}),
    ]
