"""Conformance with the official client: comfy-sdk (pinned) drives the v2 surface of the real service (API,
worker, ComfyUI), configured only by COMFY_BASE_URL as a script written for Comfy Cloud would be; the raw
responses of the same calls are checked against the vendored spec."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from comfy_sdk import Comfy, OutputReady, Progress, StatusChange
from PIL import Image

from tests.api.v2.spec import check_event, check_response, check_schema
from tests.integration.conftest import Service
from tests.media_files import png

ORANGE = (255, 165, 0)


def invert_graph(image: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdk", "images": ["2", 0]}},
    }


SAMPLER = {
    "seed": 1,
    "cfg": 7.0,
    "sampler_name": "euler",
    "scheduler": "normal",
    "denoise": 1.0,
    "model": ["4", 0],
    "positive": ["6", 0],
    "negative": ["7", 0],
    "latent_image": ["5", 0],
}


def txt2img_graph(steps: int) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "smoke-sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdk", "images": ["8", 0]}},
    }


@pytest.fixture
def comfy(service: Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[Comfy]:
    monkeypatch.setenv("COMFY_BASE_URL", service.url)  # the client adds /api/v2 itself
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    with Comfy(client_info="comfyjobs-tests") as client:
        yield client


def checked(resp: httpx.Response) -> Any:
    body = resp.json() if resp.content else None
    check_response(resp.request.method, resp.request.url.path, resp.status_code, body)
    return body


def sse_frames(api: httpx.Client, path: str) -> list[tuple[str, dict[str, Any]]]:
    frames, event = [], None
    with api.stream("GET", path, timeout=httpx.Timeout(10, read=120)) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event is not None:
                frames.append((event, json.loads(line.split(":", 1)[1])))
    return frames


def test_an_input_is_uploaded_deduplicated_and_used_by_name_and_handle(
    comfy: Comfy, api: httpx.Client
) -> None:
    data = png(24, 16, "orange")
    first = comfy.assets.from_bytes(data, filename="sdk-input.png", content_type="image/png")
    first.commit()
    again = comfy.assets.from_bytes(data, filename="sdk-input.png", content_type="image/png")
    again.commit()
    assert again.id == first.id and first.hash == again.hash and str(first.hash).startswith("blake3:")
    check_schema("Asset", checked(api.get(f"/api/v2/assets/{first.id}")))

    for image in ("sdk-input.png", first):  # by the file name it was uploaded under, and by handle
        wf = comfy.workflows.from_json(invert_graph("placeholder.png"))
        wf.set_input("1", "image", image)
        job = comfy.submit(wf)
        seen = list(job.events())
        assert isinstance(seen[-1], StatusChange) and seen[-1].status == "succeeded"
        ready = [e for e in seen if isinstance(e, OutputReady)]
        assert [e.output.node_id for e in ready] == ["3"]
        done = job.result()
        (output,) = done.get_outputs("3")
        picture = Image.open(io.BytesIO(output.to_bytes())).convert("RGB")
        assert picture.size == (24, 16)
        pixel = picture.getpixel((5, 5))
        assert isinstance(pixel, tuple)
        # ImageInvert ran on our input (ComfyUI rounds through float32: a unit either way)
        assert all(abs(got - (255 - c)) <= 1 for got, c in zip(pixel, ORANGE, strict=True)), pixel
        assert output.to_bytes(range=(0, 7)) == b"\x89PNG\r\n\x1a\n"
        raw = checked(api.get(f"/api/v2/jobs/{job.id}"))
        assert raw["status"] == "succeeded" and raw["metrics"]["execution_ms"] is not None
        checked(api.get(f"/api/v2/assets/{output.id}"))

    listed = [summary.id for summary in comfy.list_jobs(limit=10)]
    assert job.id in listed


def test_the_event_stream_matches_the_spec(comfy: Comfy, api: httpx.Client) -> None:
    job = comfy.submit(comfy.workflows.from_json(txt2img_graph(steps=3)))
    frames = sse_frames(api, f"/api/v2/jobs/{job.id}/events")
    for event, data in frames:
        check_event(event, data)
    names = [event for event, _ in frames]
    assert names[0] == "status" and frames[-1] == ("status", {"status": "succeeded", "queue_position": None})
    assert "progress" in names and names.index("output") < len(names) - 1
    assert json.loads(json.dumps(frames[-2][1]))["node_id"] == "9"  # the output, before the end


def test_a_running_job_is_canceled(comfy: Comfy, api: httpx.Client) -> None:
    job = comfy.submit(comfy.workflows.from_json(txt2img_graph(steps=400)))
    for event in job.events():
        if isinstance(event, Progress) and event.step:
            break  # sampling: it runs in ComfyUI now
    job.cancel()
    assert job.status in ("canceling", "canceled")
    job.wait(timeout=120)
    assert job.status == "canceled"
    final = checked(api.get(f"/api/v2/jobs/{job.id}"))
    assert final["outputs"] == [] and final["error"]["code"] == "canceled"


def test_a_graph_that_cannot_run_here_is_refused_before_it_is_queued(api: httpx.Client) -> None:
    graph = txt2img_graph(steps=3)
    graph["4"]["inputs"]["ckpt_name"] = "not-installed.safetensors"
    graph["3"]["inputs"]["steps"] = 0
    refused = api.post("/api/v2/jobs", json={"workflow": graph})
    error = checked(refused)["error"]
    assert (refused.status_code, error["code"]) == (422, "invalid_workflow")
    assert [p["reason"] for p in error["details"]["node_errors"]["4"]] == ["not_a_choice"]
    assert [p["field"] for p in error["details"]["node_errors"]["3"]] == ["steps"]
