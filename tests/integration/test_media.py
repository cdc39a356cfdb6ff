"""Media in, media out, with the real worker and ComfyUI: inputs uploaded or sent inline, the shipped
media workflows, every kind of output, previews, and deleting outputs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import httpx
from PIL import Image

from tests.integration.conftest import Service
from tests.integration.test_service import image, run
from tests.media_files import mask_png, png
from tests.support import sse_events

STAGED = Path("comfyui") / "cpu" / "input" / "comfyjobs"  # the worker's ComfyUI's input subfolder


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def upload(api: httpx.Client, data: bytes, name: str = "photo.png") -> str:
    resp = api.post("/assets", files={"file": (name, data, "image/png")})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_img2img_from_an_uploaded_picture(api: httpx.Client, events, service: Service) -> None:  # type: ignore[no-untyped-def]
    asset = upload(api, png(96, 64, "orange"))
    task = run(api, events, "img2img", image=asset, prompt="a fox", steps=2, denoise=0.6)

    assert task["status"] == "SUCCESS", task["error"]
    assert task["params"]["image"] == asset
    [output] = task["outputs"]
    assert output["kind"] == "image"
    assert image(api, output).size == (96, 64)  # the input's size
    assert output["url_expires_at"] > task["finished_at"]
    staged = service.data_dir / STAGED
    assert not staged.exists() or not any(staged.iterdir())  # handed over for the run, then removed


def test_inpaint_with_inline_image_and_mask(api: httpx.Client, events) -> None:  # type: ignore[no-untyped-def]
    task = run(
        api, events, "inpaint", image=data_url(png(64, 64)), mask=data_url(mask_png(64, 64)),
        prompt="a cat", steps=2,
    )  # fmt: skip
    assert task["status"] == "SUCCESS", task["error"]
    assert image(api, task["outputs"][0]).size == (64, 64)


def test_upscale_without_and_with_a_model(api: httpx.Client, events) -> None:  # type: ignore[no-untyped-def]
    asset = upload(api, png(40, 24, "navy"))
    resized = run(api, events, "upscale", image=asset, scale_by=2.0, upscale_method="bicubic")
    assert resized["status"] == "SUCCESS", resized["error"]
    assert image(api, resized["outputs"][0]).size == (80, 48)
    modelled = run(api, events, "upscale-model", image=asset, upscale_model="smoke-2x.safetensors")
    assert modelled["status"] == "SUCCESS", modelled["error"]
    assert image(api, modelled["outputs"][0]).size == (80, 48)


def test_every_output_kind_reaches_the_client(api: httpx.Client, events) -> None:  # type: ignore[no-untyped-def]
    task = run(api, events, "tiny-media", width=48, height=32, batch_size=3, color=0x3366FF)
    assert task["status"] == "SUCCESS", task["error"]
    by_kind = {o["kind"]: o for o in task["outputs"]}
    assert set(by_kind) == {"animated_image", "video", "text"}

    webp = by_kind["animated_image"]
    assert webp["content_type"] == "image/webp" and webp["filename"].endswith(".webp")
    anim = Image.open(io.BytesIO(api.get(webp["url"]).content))
    assert anim.size == (48, 32)
    assert anim.n_frames == 2  # three equal frames (WEBP merges them), then the white one

    video = by_kind["video"]
    assert video["content_type"] == "video/webm"
    fetched = api.get(video["url"])
    assert fetched.headers["content-type"] == "video/webm"
    with av.open(io.BytesIO(fetched.content)) as container:
        frames = list(container.decode(video=0))
    assert (len(frames), frames[0].width, frames[0].height) == (4, 48, 32)

    text = by_kind["text"]
    assert text["content_type"].startswith("text/plain")
    assert api.get(text["url"]).text == "frames written"


def test_previews_arrive_on_the_event_stream(api: httpx.Client, service: Service) -> None:
    resp = api.post(
        "/generate",
        json={
            "workflow_id": "txt2img",
            "params": {"prompt": "a fox", "steps": 6, "width": 128, "height": 128},
        },
    )
    task_id = resp.json()["task_id"]
    previews = []
    names = []
    with (
        httpx.Client(base_url=service.url, timeout=240) as client,
        client.stream("GET", f"/tasks/{task_id}/events") as stream,
    ):
        for event in sse_events(stream.iter_lines()):
            names.append(event.event)
            if event.event == "preview":
                previews.append(event)
    assert names[-1] == "success"
    assert previews, names
    assert all(p.id is None for p in previews)  # not events of the record: no id to resume from
    frame = Image.open(io.BytesIO(base64.b64decode(previews[-1].data["image_base64"])))
    assert frame.format == "JPEG"
    assert previews[-1].data["task_id"] == task_id


def test_outputs_can_be_deleted_on_request(api: httpx.Client, events) -> None:  # type: ignore[no-untyped-def]
    task = run(api, events, "tiny")
    url = task["outputs"][0]["url"]
    assert api.get(url).status_code == 200
    assert api.delete(f"/tasks/{task['task_id']}/outputs").status_code == 204
    after = api.get(f"/tasks/{task['task_id']}").json()
    assert (after["status"], after["outputs"], after["outputs_deleted"]) == ("SUCCESS", [], True)
    assert api.get(url).status_code == 404
