"""An API and a worker as on two machines: separate DATA_DIRs and models folders, sharing nothing but a
redis-server and an S3 endpoint (moto's server, the S3 wire protocol over HTTP). The worker uploads its
outputs to the bucket itself; the client downloads them through presigned URLs; the API knows the
worker's model files only from its heartbeat."""

from __future__ import annotations

import io
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
from PIL import Image

from tests.integration.conftest import WORKER_READY_TIMEOUT_S, service_env, start, stop
from tests.media_files import png
from tests.s3 import S3Endpoint
from tests.support import JobEvents, free_port, run_to_success, wait_for

JOB_TIMEOUT_S = 240.0


@dataclass
class Fleet:
    url: str
    bucket: str
    api_data: Path
    worker_data: Path
    worker: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def fleet(
    redis_url: str, model_dir: Path, s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    bucket = s3_endpoint.new_bucket()
    api_data, worker_data = tmp_path_factory.mktemp("api-data"), tmp_path_factory.mktemp("worker-data")
    api_models = tmp_path_factory.mktemp("api-models")  # empty: the API has no models of its own
    worker_models = tmp_path_factory.mktemp("worker-models")
    (worker_models / "checkpoints").mkdir()
    smoke = model_dir / "checkpoints" / "smoke-sd15.safetensors"
    shutil.copy(smoke, worker_models / "checkpoints" / smoke.name)  # the workflows' default
    shutil.copy(smoke, worker_models / "checkpoints" / "remote.safetensors")  # only this worker has it
    queue = f"fleet-{uuid.uuid4().hex[:8]}"  # not the session service's queue
    port = free_port()
    common = {**s3_endpoint.env(bucket), "QUEUE_NAME": queue}
    api = start(
        ["api"],
        service_env(redis_url, api_data, api_models, API_PORT=str(port), **common),
        api_data / "api.log",
    )
    worker = start(
        ["worker", "--cpu"],
        service_env(redis_url, worker_data, worker_models, **common),
        worker_data / "worker.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:

            def ours_ready() -> bool:
                if worker.poll() is not None or api.poll() is not None:
                    raise AssertionError(f"a fleet process exited; logs in {api_data} and {worker_data}")
                try:
                    workers = client.get("/ready").json().get("workers") or []
                except httpx.TransportError:
                    return False
                return any(w["pid"] == worker.pid and w["comfyui_ready"] for w in workers)

            wait_for(ours_ready, timeout_s=WORKER_READY_TIMEOUT_S, what="the fleet worker", interval_s=0.5)
        yield Fleet(url=url, bucket=bucket, api_data=api_data, worker_data=worker_data, worker=worker)
    finally:
        stop(worker)
        stop(api)


def test_outputs_go_through_the_bucket(fleet: Fleet, s3_endpoint: S3Endpoint, redis_url: str) -> None:
    events = JobEvents(redis_url)
    try:
        with httpx.Client(base_url=fleet.url, timeout=30) as api:
            uploaded = api.post("/assets", files={"file": ("in.png", png(40, 24, "teal"), "image/png")})
            assert uploaded.status_code == 201, uploaded.text
            asset = uploaded.json()
            assert asset["url"].startswith(s3_endpoint.url + "/")  # presigned, straight from the bucket
            assert requests.get(asset["url"], timeout=10).content == png(40, 24, "teal")

            params = {"image": asset["id"], "scale_by": 2}
            task = run_to_success(api, events, "upscale", params, JOB_TIMEOUT_S)
            task_id = task["task_id"]
    finally:
        events.close()

    [output] = task["outputs"]
    assert output["url"].startswith(s3_endpoint.url + "/")
    download = requests.get(output["url"], timeout=10)  # a client anywhere: no API, no key
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(download.content)).size == (80, 48)
    keys = [o["Key"] for o in s3_endpoint.client().list_objects_v2(Bucket=fleet.bucket)["Contents"]]  # type: ignore[attr-defined]
    assert f"outputs/{task_id}/{output['filename']}" in keys
    assert f"inputs/default/{asset['id']}" in keys
    # Nothing went through either machine's DATA_DIR.
    assert not (fleet.api_data / "outputs").exists() and not (fleet.worker_data / "outputs").exists()


def test_model_choices_come_from_the_workers(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=30) as api:
        described = api.get("/workflows/txt2img").json()
        checkpoint = next(p for p in described["parameters"] if p["name"] == "checkpoint")
        assert "remote.safetensors" in checkpoint["choices"]
        ok = api.post(
            "/generate",
            json={"workflow_id": "txt2img", "params": {"prompt": "x", "checkpoint": "remote.safetensors"}},
        )
        assert ok.status_code == 202, ok.text
        assert api.delete(f"/tasks/{ok.json()['task_id']}").status_code == 200
        refused = api.post(
            "/generate",
            json={"workflow_id": "txt2img", "params": {"prompt": "x", "checkpoint": "nowhere.safetensors"}},
        )
        assert refused.status_code == 422
