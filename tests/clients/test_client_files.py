"""Both clients with media: `--param image=@file` uploads the file (POST /assets) and sends its asset id;
outputs come down through their signed links (query strings, names from `filename`), the API key only to
the service's own host; `preview` events on the stream are not taken for the task.

Against a real API (uvicorn + Redis, and moto's S3 server for the bucket case) with no worker: the test
moves each job along through the worker's own JobStore, as a worker would."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import api_client_minimal as cj
import httpx
import pytest
import redis
from PIL import Image
from pydantic import SecretStr

from comfyjobs.jobs.record import JobStatus, Progress, StoredOutput, utc_now
from comfyjobs.settings import Settings
from comfyjobs.storage.objects import open_object_store, output_key
from tests.api.conftest import LiveApi
from tests.clients.conftest import run_client, serve, start_client
from tests.media_files import noise_png, png
from tests.s3 import CREDENTIALS, REGION, S3Endpoint

CLIENTS = ["api_client.py", "api_client_minimal.py"]
TASK_ID = re.compile(r"task ([0-9a-f]{32}) queued")


def queued_task_id(stderr: str) -> str:
    found = TASK_ID.search(stderr)
    assert found, stderr
    return found.group(1)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png(40, 24, "orange"))
    return path


# --- @file parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("script", CLIENTS)
def test_a_local_file_is_uploaded_and_sent_as_its_asset_id(
    script: str, live_api: LiveApi, photo: Path
) -> None:
    # No worker: the job stays queued; --timeout ends the wait, the queued task shows what was sent.
    result = run_client(
        script, "run", "img2img", "--param", f"image=@{photo}", "--param", "prompt=a fox",
        "--timeout", "1", "--server", live_api.url,
    )  # fmt: skip
    assert result.code == cj.EXIT_TIMEOUT, result.stderr
    assert "Traceback" not in result.stderr
    sha256 = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert f"uploaded photo.png → asset {sha256[:12]}" in result.stderr.replace("->", "→")
    task_id = queued_task_id(result.stderr)
    with httpx.Client(base_url=live_api.url, timeout=10) as api:
        task = api.get(f"/tasks/{task_id}").json()
        assert (task["status"], task["params"]["image"], task["params"]["prompt"]) == (
            "PENDING",
            sha256,
            "a fox",
        )
        asset = api.get(f"/assets/{sha256}").json()
    assert (asset["filename"], asset["content_type"], asset["width"], asset["height"]) == (
        "photo.png",
        "image/png",
        40,
        24,
    )


def test_the_rich_client_names_the_file_not_the_hash(live_api: LiveApi, photo: Path) -> None:
    result = run_client(
        "api_client.py", "run", "img2img", "--param", f"image=@{photo}", "--param", "prompt=a fox",
        "--timeout", "1", "--server", live_api.url,
    )  # fmt: skip
    sha256 = hashlib.sha256(photo.read_bytes()).hexdigest()
    panel = result.stderr.split("uploaded", 1)[1]
    assert re.search(rf"image\s+photo\.png \(asset {sha256[:12]}\)", panel), result.stderr
    assert sha256 not in result.stderr  # never the 64 characters


@pytest.mark.parametrize("script", CLIENTS)
def test_a_missing_file_is_a_usage_error(script: str, live_api: LiveApi, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "photo.png"
    result = run_client(
        script, "run", "img2img", "--param", f"image=@{missing}", "--param", "prompt=a fox",
        "--server", live_api.url,
    )  # fmt: skip
    assert result.code == cj.EXIT_USAGE
    assert str(missing) in result.stderr.replace("\n", "")
    assert "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    folder = run_client(
        script, "run", "img2img", "--param", f"image=@{tmp_path}", "--param", "prompt=a fox",
        "--server", live_api.url,
    )  # fmt: skip
    assert folder.code == cj.EXIT_USAGE
    assert "is not a file" in folder.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_a_file_for_a_parameter_that_takes_none_is_a_usage_error(
    script: str, live_api: LiveApi, photo: Path
) -> None:
    result = run_client(
        script, "run", "img2img", "--param", "image=@" + str(photo), "--param", f"prompt=@{photo}",
        "--server", live_api.url,
    )  # fmt: skip
    assert result.code == cj.EXIT_USAGE
    assert "prompt is a string parameter, not a file parameter" in result.stderr
    assert "(image)" in result.stderr  # what does take one
    assert "uploaded" not in result.stderr  # refused before anything was sent
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_files_the_service_refuses(script: str, live_api: LiveApi, tmp_path: Path) -> None:
    # Not an image at all: a fine asset (kind "file"), but not for an image parameter.
    notes = tmp_path / "notes.txt"
    notes.write_text("some words")
    text = run_client(
        script, "run", "img2img", "--param", f"image=@{notes}", "--param", "prompt=a fox",
        "--server", live_api.url,
    )  # fmt: skip
    assert text.code == cj.EXIT_REJECTED, text.stderr
    assert "params.image" in text.stderr and "expected an image" in text.stderr
    # Says it is a PNG, but is cut short: the upload itself is refused.
    cut = tmp_path / "cut.png"
    cut.write_bytes(noise_png(30, 30)[:1000])
    broken = run_client(
        script, "run", "img2img", "--param", f"image=@{cut}", "--param", "prompt=a fox",
        "--server", live_api.url,
    )  # fmt: skip
    assert broken.code == cj.EXIT_REJECTED, broken.stderr
    assert f"image=@{cut}" in broken.stderr.replace("\n", "")
    assert "file: " in broken.stderr and "not a readable PNG" in broken.stderr
    assert "Traceback" not in text.stderr + broken.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_a_file_over_the_size_limit(
    script: str, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(noise_png(64, 64))  # ~12 KB of noise: over 2048 bytes
    with serve(settings.model_copy(update={"input_max_bytes": 2048}), redis_client) as api:
        result = run_client(
            script, "run", "upscale", "--param", f"image=@{big}", "--server", api.url,
        )  # fmt: skip
    assert result.code == cj.EXIT_REJECTED, result.stderr
    assert "INPUT_MAX_BYTES (2048 bytes)" in result.stderr
    assert "Traceback" not in result.stderr


def test_parameters_with_at_signs() -> None:
    workflow = {
        "parameters": [
            {"name": "image", "type": "image"},
            {"name": "mask", "type": "mask"},
            {"name": "prompt", "type": "string"},
            {"name": "steps", "type": "integer"},
        ]
    }
    parsed = cj.parse_param_args(
        [f"image=@{__file__}", f"mask=@{__file__}", "prompt=@@user, in the style of", "steps=@@3"],
        workflow,
    )
    assert parsed == {
        "image": cj.LocalFile(Path(__file__)),
        "mask": cj.LocalFile(Path(__file__)),
        "prompt": "@user, in the style of",  # @@: a literal @
        "steps": "@3",  # sent as it is; the service explains
    }
    assert cj.media_parameters(workflow) == ["image", "mask"]
    with pytest.raises(cj.ApiError) as unknown:
        cj.parse_param_args(["other=@x.png"], workflow)
    assert unknown.value.exit_code == cj.EXIT_USAGE
    assert "not a parameter of this workflow" in str(unknown.value)
    with pytest.raises(cj.ApiError) as empty:
        cj.parse_param_args(["image=@"], workflow)
    assert "expected a file path after @" in str(empty.value)


def test_library_upload(live_api: LiveApi, photo: Path, tmp_path: Path) -> None:
    asset = cj.upload(photo, server=live_api.url)
    assert asset["id"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert (asset["kind"], asset["filename"], asset["width"]) == ("image", "photo.png", 40)
    # A LocalFile (or a Path) in generate()'s parameters is uploaded on the way.
    with cj.Client(live_api.url) as client:
        accepted = client.generate("upscale", {"image": cj.LocalFile(photo), "scale_by": 2})
        assert accepted["params"]["image"] == asset["id"]
        accepted = client.generate("upscale", {"image": photo})
        assert accepted["params"]["image"] == asset["id"]
    with pytest.raises(cj.ApiError) as missing:
        cj.upload(tmp_path / "gone.png", server=live_api.url)
    assert missing.value.exit_code == cj.EXIT_USAGE
    assert "gone.png" in str(missing.value)
    (tmp_path / "cut.png").write_bytes(noise_png(30, 30)[:1000])
    with pytest.raises(cj.ApiError) as refused:
        cj.upload(tmp_path / "cut.png", server=live_api.url)
    assert (refused.value.status, refused.value.exit_code) == (422, cj.EXIT_REJECTED)
    assert refused.value.fields[0]["field"] == "file"


# --- outputs and the event stream ----------------------------------------------------------------------

OUTPUT = png(48, 32, "navy")


def finish_with_an_output(api: LiveApi, task_id: str, filename: str = "fox_00001_.png") -> None:
    """What a worker does: takes the job, steps, sends a preview, stores the output, succeeds."""
    store = api.store
    assert store.update(task_id, status=JobStatus.STARTED, worker="w-test", attempts=1, started_at=utc_now())
    store.publish_preview(task_id, jpeg())
    progress = Progress(value=1, max=2, percent=50.0, node="3", node_type="KSampler")
    assert store.update(task_id, status=JobStatus.PROGRESS, progress=progress)
    open_object_store(api.settings).put_bytes(output_key(task_id, filename), OUTPUT, "image/png")
    output = StoredOutput(
        filename=filename, content_type="image/png", node_id="9", size_bytes=len(OUTPUT), kind="image"
    )
    assert store.update(task_id, status=JobStatus.SUCCESS, outputs=[output], finished_at=utc_now())


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(out, format="JPEG")
    return out.getvalue()


def run_to_the_end(script: str, api: LiveApi, out: Path, *extra: str) -> tuple[str, str]:
    """Runs `run tiny` with the client while this test plays the worker; checks the saved output;
    returns the task id and all the client wrote."""
    proc = start_client(
        script, "run", "tiny", "--param", "color=7", "--server", api.url, "--out", str(out),
        "--timeout", "60", *extra,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = ""
        while not TASK_ID.search(seen):
            line = proc.stderr.readline()
            assert line, f"the client ended before queueing: {seen}"
            seen += line
        task_id = queued_task_id(seen)
        finish_with_an_output(api, task_id)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, seen + stderr
    saved = out / task_id / "fox_00001_.png"
    assert saved.read_bytes() == OUTPUT
    assert [p.name for p in (out / task_id).iterdir()] == ["fox_00001_.png"]  # no query string, no .part
    return task_id, seen + stderr + stdout


@pytest.mark.parametrize("script", CLIENTS)
def test_outputs_come_down_through_signed_links(
    script: str, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # With API keys on: the key is for the API; the signed links need none, and get none from another host.
    keyed = settings.model_copy(update={"api_keys": SecretStr("client-key")})
    with serve(keyed, redis_client, public_host="localhost") as api:
        task_id, output = run_to_the_end(script, api, tmp_path, "--api-key", "client-key")
        with httpx.Client(base_url=api.url, headers={"X-API-Key": "client-key"}, timeout=10) as http:
            url = http.get(f"/tasks/{task_id}").json()["outputs"][0]["url"]
    assert url.startswith(f"http://localhost:{api.url.rsplit(':', 1)[1]}/outputs/{task_id}/fox_00001_.png?")
    assert "sig=" in url
    assert "Traceback" not in output


@pytest.mark.parametrize("script", CLIENTS)
def test_outputs_come_down_from_a_bucket(
    script: str,
    settings: Settings,
    redis_client: redis.Redis,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # the API (in this process) presigns with them
    bucket = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_bucket": s3_endpoint.new_bucket(),
            "s3_endpoint_url": s3_endpoint.url,
            "s3_region": REGION,
            "s3_addressing_style": "path",
            "api_keys": SecretStr("client-key"),
        }
    )
    with serve(bucket, redis_client) as api:
        task_id, output = run_to_the_end(script, api, tmp_path, "--api-key", "client-key")
        with httpx.Client(base_url=api.url, headers={"X-API-Key": "client-key"}, timeout=10) as http:
            url = http.get(f"/tasks/{task_id}").json()["outputs"][0]["url"]
    assert url.startswith(f"{s3_endpoint.url}/") and "X-Amz-Signature=" in url  # presigned, on the bucket
    assert "Traceback" not in output


class Recorder(BaseHTTPRequestHandler):
    """Serves OUTPUT at any path and notes each request's headers: a bucket, or the service itself."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Recorder.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(OUTPUT)))
        self.end_headers()
        self.wfile.write(OUTPUT)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_api_key_goes_to_the_service_only(recorder: int, tmp_path: Path) -> None:
    query = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc%2Fdef&response-content-type=image%2Fpng"
    task = {
        "outputs": [
            # Another host (same machine, other name: another origin), as a presigned bucket link.
            {
                "filename": "fox_00001_.png",
                "url": f"http://localhost:{recorder}/bucket/outputs/t/x.png{query}",
            },
            # The service's own (a local-backend link); a file name with folders is cut to its name.
            {
                "filename": "../sub/fox_00002_.png",
                "url": f"http://127.0.0.1:{recorder}/outputs/t/y.png{query}",
            },
        ]
    }
    with cj.Client(f"http://127.0.0.1:{recorder}", api_key="secret-key") as client:
        saved = client.download(task, tmp_path)
    assert [p.name for p in saved] == ["fox_00001_.png", "fox_00002_.png"]
    assert all(p.parent == tmp_path and p.read_bytes() == OUTPUT for p in saved)
    bucket, own = Recorder.seen
    assert bucket["path"] == f"/bucket/outputs/t/x.png{query}"  # the query string as it was
    assert "authorization" not in bucket and "x-api-key" not in bucket
    assert own["authorization"] == "Bearer secret-key"
    assert cj.output_filename({"filename": "", "url": f"http://h/o/t/a%20b.png{query}"}) == "a b.png"


def test_an_expired_link_is_read_again(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    with serve(settings.model_copy(update={"url_ttl_s": 1}), redis_client) as api:
        task_id = cj.generate("tiny", {"color": 3}, server=api.url)
        finish_with_an_output(api, task_id)
        task = cj.wait(task_id, timeout_s=10, server=api.url)
        time.sleep(2.2)  # nothing to wait on but the clock: the link's expiry is in whole seconds
        assert httpx.get(task["outputs"][0]["url"], timeout=10).status_code == 403
        (saved,) = cj.download(task, tmp_path, server=api.url)
    assert saved.read_bytes() == OUTPUT


def test_previews_are_not_taken_for_the_task(live_api: LiveApi) -> None:
    with httpx.Client(base_url=live_api.url, timeout=10) as http:
        task_id = http.post("/generate", json={"workflow_id": "tiny", "params": {"color": 1}}).json()[
            "task_id"
        ]
    store = live_api.store
    assert store.update(task_id, status=JobStatus.STARTED, worker="w-test", attempts=1, started_at=utc_now())
    store.publish_preview(task_id, jpeg())  # sent at once to whoever connects while the job runs
    with cj.Client(live_api.url) as client:
        with_previews: list[tuple[str, str | None]] = []
        for event, event_id, data in client.events(task_id, previews=True):
            with_previews.append((event, event_id))
            if event == "preview":
                assert data["task_id"] == task_id and data["content_type"] == "image/jpeg"
                break
        plain = client.events(task_id)
        names = [next(plain)[0], next(plain)[0]]
        assert store.update(task_id, status=JobStatus.SUCCESS, finished_at=utc_now())
        names += [event for event, _, data in plain if data is not None]
    assert with_previews == [
        ("queued", with_previews[0][1]),
        ("started", with_previews[1][1]),
        ("preview", None),
    ]
    assert names == ["queued", "started", "success"]


def test_the_rich_client_follows_a_job_that_sends_previews(live_api: LiveApi) -> None:
    with httpx.Client(base_url=live_api.url, timeout=10) as http:
        task_id = http.post("/generate", json={"workflow_id": "tiny", "params": {"color": 1}}).json()[
            "task_id"
        ]
    store = live_api.store
    assert store.update(task_id, status=JobStatus.STARTED, worker="w-test", attempts=1, started_at=utc_now())
    store.publish_preview(task_id, jpeg())
    # The job never ends here: the client follows (a preview at once, then heartbeats) until --timeout.
    result = run_client(
        "api_client.py", "status", task_id, "--follow", "--timeout", "1.5", "--server", live_api.url
    )
    assert result.code == cj.EXIT_TIMEOUT, result.stderr
    assert "still STARTED after 1.5 s" in result.stderr
    assert "1 preview" in result.stderr
    assert "Traceback" not in result.stderr
