"""The playground (/ui) in a real headless Chromium against the real service: the key prompt, a form
generated from the manifest, a job submitted from it whose progress moves and whose output image loads at
the size asked for, and a server 422 shown next to its field. No console errors, under the page's CSP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import Service, api_process
from tests.media_files import png
from tests.support import free_port
from tests.ui.browser import chromium, screenshot

KEY = "k-ui-alice"
OTHER_KEY = "k-ui-bob"
JOB_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def keyed_api(service: Service) -> Iterator[httpx.Client]:
    with api_process(service, free_port(), "api-ui.log", API_KEYS=f"alice:{KEY},bob:{OTHER_KEY}") as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, keyed_api: httpx.Client) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.problems = []  # console errors and page errors (a CSP violation is one)
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.goto(f"{keyed_api.base_url}/ui")
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    page.get_by_role("button", name="txt2img").click()
    page.get_by_label("prompt (required)").fill("a red fox in the snow")
    yield page
    context.close()


def _fill(page: Any, **values: object) -> None:
    for name, value in values.items():
        page.locator(f"#param-{name}").fill(str(value))


def test_the_key_is_asked_for_and_kept_as_a_password(browser: Any, keyed_api: httpx.Client) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{keyed_api.base_url}/ui")
    field = page.get_by_label("API key", exact=True)
    assert field.get_attribute("type") == "password"
    assert page.get_by_role("button", name="txt2img").count() == 0  # nothing listed without a key
    resp = page.request.get(f"{keyed_api.base_url}/ui")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    context.close()


def test_txt2img_from_the_form_shows_progress_and_the_image(page: Any) -> None:
    _fill(page, steps=4, width=64, height=80)
    page.evaluate(
        """() => { window.seenProgress = [];
        new MutationObserver(() => window.seenProgress.push(document.getElementById('run-progress').value))
          .observe(document.getElementById('run-progress'), {attributes: true}); }"""
    )
    page.get_by_role("button", name="Generate").click()

    page.wait_for_function(
        "() => { const i = document.querySelector('#outputs img');"
        " return i && i.complete && i.naturalWidth > 0 }",
        timeout=JOB_TIMEOUT_MS,
    )
    size = page.evaluate(
        "() => { const i = document.querySelector('#outputs img'); return [i.naturalWidth, i.naturalHeight] }"
    )
    assert size == [64, 80]
    seen = page.evaluate("() => window.seenProgress")
    assert len(set(seen)) >= 3, seen  # moved through the sampler's steps, not only to the end
    assert page.locator("#run-status").inner_text() == "Done"
    assert page.get_by_role("button", name="Same with a new seed").is_visible()
    screenshot(page, "playground-txt2img")
    assert page.problems == []


def test_the_request_is_shown_as_code_to_copy(page: Any) -> None:
    _fill(page, steps=3)
    page.locator("#as-code summary").click()

    curl = page.get_by_label("curl").input_value()
    assert (
        curl.startswith("curl -sS -X POST 'http://127.0.0.1:") and '"X-API-Key: $COMFYJOBS_API_KEY"' in curl
    )
    assert (
        '"workflow_id":"txt2img"' in curl
        and '"steps":3' in curl
        and '"prompt":"a red fox in the snow"' in curl
    )
    python = page.get_by_label("Python (api_client_minimal)").input_value()
    assert (
        'cj.generate("txt2img", {"prompt": "a red fox in the snow"' in python and '"seed": "random"' in python
    )


def test_the_history_lists_this_keys_jobs_only(page: Any, keyed_api: httpx.Client) -> None:
    theirs = keyed_api.post(
        "/generate",
        json={"workflow_id": "tiny", "params": {}},
        headers={"X-API-Key": OTHER_KEY},
    )
    assert theirs.status_code == 202, theirs.text
    ours = keyed_api.post("/generate", json={"workflow_id": "tiny", "params": {}}, headers={"X-API-Key": KEY})
    assert ours.status_code == 202, ours.text
    page.reload()

    page.locator(f'#history button[data-task="{ours.json()["task_id"]}"]').wait_for()
    listed = page.locator("#history button").evaluate_all("(bs) => bs.map((b) => b.dataset.task)")
    assert theirs.json()["task_id"] not in listed
    page.locator(f'#history button[data-task="{ours.json()["task_id"]}"]').click()
    page.get_by_role("heading", name="tiny").wait_for()  # its workflow reopened with its parameters
    screenshot(page, "playground-history")


def test_a_server_422_is_shown_next_to_its_field(page: Any) -> None:
    page.evaluate(
        "() => { document.getElementById('job-form').noValidate = true }"
    )  # past the browser's checks
    _fill(page, steps=10_000)
    page.get_by_role("button", name="Generate").click()

    error = page.locator("#param-steps-error")
    error.wait_for(state="visible")
    assert "less than or equal to 150" in error.inner_text()
    assert page.locator("#run-panel").is_hidden()  # nothing was queued
    screenshot(page, "playground-422")
    # (Chromium logs every non-2xx response it loads; the 422 is the one this test asked for.)
    assert [p for p in page.problems if "status of 422" not in p] == []


def _open(page: Any, workflow: str, image: tuple[int, int]) -> None:
    page.locator(f'nav button[data-workflow="{workflow}"]').click()
    page.get_by_role("heading", name=workflow).wait_for()
    page.get_by_label("prompt (required)").fill("a watercolour fox")
    page.locator("#param-image").set_input_files(
        {"name": "photo.png", "mimeType": "image/png", "buffer": png(*image, "teal")}
    )
    _fill(page, steps=3)


def _output_size(page: Any) -> list[int]:
    page.wait_for_function(
        "() => { const i = document.querySelector('#outputs img');"
        " return i && i.complete && i.naturalWidth > 0 }",
        timeout=JOB_TIMEOUT_MS,
    )
    size: list[int] = page.evaluate(
        "() => { const i = document.querySelector('#outputs img'); return [i.naturalWidth, i.naturalHeight] }"
    )
    return size


def test_img2img_with_an_uploaded_image(page: Any) -> None:
    _open(page, "img2img", (72, 48))
    page.locator("#param-image ~ img.preview").wait_for()

    page.get_by_role("button", name="Generate").click()

    assert _output_size(page) == [72, 48]  # the input's size
    screenshot(page, "playground-img2img")
    assert page.problems == []


def test_inpaint_with_a_mask_painted_on_the_canvas(page: Any, keyed_api: httpx.Client) -> None:
    _open(page, "inpaint", (64, 48))
    canvas = page.get_by_label("mask: paint over the image")
    canvas.wait_for()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()

    page.get_by_role("button", name="Generate").click()

    assert _output_size(page) == [64, 48]
    task_id = page.locator("#run-title").inner_text().removeprefix("Job ")
    task = keyed_api.get(f"/tasks/{task_id}", headers={"X-API-Key": KEY}).json()
    mask = keyed_api.get(f"/assets/{task['params']['mask']}", headers={"X-API-Key": KEY}).json()
    painted = Image.open(io.BytesIO(httpx.get(mask["url"]).content)).convert("L")
    assert painted.size == (64, 48)  # the mask is the image's size
    assert painted.getpixel((32, 24)) == 255 and painted.getpixel((2, 2)) == 0  # the stroke, and not painted
    screenshot(page, "playground-inpaint")
    assert page.problems == []
