"""Cancelling real jobs: a running prompt is interrupted in ComfyUI, a queued one never runs, and the
worker takes the next job normally."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.conftest import Service
from tests.integration.test_service import submit
from tests.support import JobEvents

LONG = {"prompt": "a long fox", "steps": 150, "width": 256, "height": 256}


def sampling(changes: list[dict[str, Any]]) -> bool:
    return any(
        (c.get("progress") or {}).get("node_type") == "KSampler" and c["progress"]["max"] for c in changes
    )


def test_cancel_running_and_queued_jobs(service: Service, api: httpx.Client, events: JobEvents) -> None:
    comfy = f"http://127.0.0.1:{service.env['COMFYUI_BASE_PORT']}"
    earlier = set(httpx.get(f"{comfy}/history", timeout=30).json())  # (the session's ComfyUI is shared)
    running = submit(api, "txt2img", **LONG)
    events.wait_until(running, sampling, timeout_s=240, what="sampler step")
    queued = submit(api, "txt2img", **LONG)  # behind the running one: one worker, one job at a time

    assert api.delete(f"/tasks/{queued}").json()["status"] == "CANCELLED"
    cancelled = api.delete(f"/tasks/{running}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"

    # The worker stops the prompt and goes on: the next job runs and succeeds.
    after = submit(api, "tiny", color=1)
    assert events.wait_terminal(after, 240) == "SUCCESS"

    # Never run: cancelled in line, or once the worker had queued it in ComfyUI behind the running one
    # (a worker keeps the next job queued there), from where it was deleted.
    assert events.statuses(queued) in (["PENDING", "CANCELLED"], ["PENDING", "STARTED", "CANCELLED"])
    assert events.statuses(running)[-1] == "CANCELLED"
    final = api.get(f"/tasks/{running}").json()
    assert final["outputs"] == []
    steps = [p["value"] for p in events.progress(running) if p["node_type"] == "KSampler" and p["max"]]
    assert max(steps) < LONG["steps"]
    # ComfyUI itself recorded the interruption of that prompt (it did not run on to the end).
    history = httpx.get(f"{comfy}/history", timeout=30).json()
    interrupted = [
        entry
        for prompt_id, entry in history.items()
        if prompt_id not in earlier
        and any(m[0] == "execution_interrupted" for m in entry.get("status", {}).get("messages", []))
    ]
    assert len(interrupted) == 1
    assert interrupted[0]["prompt"][2]["3"]["inputs"]["steps"] == LONG["steps"]
