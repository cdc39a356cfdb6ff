"""The whole path with real parts: API → Redis/Celery → worker → ComfyUI (CPU) → outputs over HTTP."""

from __future__ import annotations

import io
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
from celery import Celery
from PIL import Image

from comfyjobs.comfy.output_files import KEEP_PROMPTS
from comfyjobs.jobs.delivery import TAKE_JOB_TASK
from tests.integration.conftest import Service
from tests.support import JobEvents

JOB_TIMEOUT_S = 240.0


def submit(api: httpx.Client, workflow_id: str, **params: object) -> str:
    resp = api.post("/generate", json={"workflow_id": workflow_id, "params": params})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


def run(api: httpx.Client, events: JobEvents, workflow_id: str, **params: object) -> dict:
    task_id = submit(api, workflow_id, **params)
    events.wait_terminal(task_id, JOB_TIMEOUT_S)
    return dict(api.get(f"/tasks/{task_id}").json())


def image(api: httpx.Client, output: dict) -> Image.Image:
    resp = api.get(output["url"])
    assert resp.status_code == 200
    assert resp.headers["content-type"] == output["content_type"] == "image/png"
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    return img


def test_smoke_txt2img_end_to_end(api: httpx.Client, events: JobEvents) -> None:
    task = run(api, events, "txt2img", prompt="a red fox", steps=4, width=192, height=128, batch_size=2)

    assert task["status"] == "SUCCESS", task["error"]
    assert task["error"] is None
    assert isinstance(task["params"]["seed"], int)  # `random` was drawn and recorded
    # The sampler's per-step progress reached the record while the job ran.
    steps = [p for p in events.progress(task["task_id"]) if p["node_type"] == "KSampler" and p["max"]]
    assert [p["value"] for p in steps] == [1, 2, 3, 4]
    assert {p["max"] for p in steps} == {4}
    assert events.statuses(task["task_id"])[:3] == ["PENDING", "STARTED", "PROGRESS"]
    assert task["progress"]["percent"] == 100.0
    assert len(task["outputs"]) == 2
    for output in task["outputs"]:
        assert output["node_id"] == "9"
        assert output["url"].startswith(api.base_url.__str__().rstrip("/") + f"/outputs/{task['task_id']}/")
        img = image(api, output)
        assert img.format == "PNG"
        assert img.size == (192, 128)
    assert task["started_at"] and task["finished_at"] and task["attempts"] == 1


def test_seeds_change_the_image(api: httpx.Client, events: JobEvents) -> None:
    common = {"prompt": "a lighthouse", "steps": 2, "width": 128, "height": 128}
    first = run(api, events, "txt2img", seed=1, **common)
    second = run(api, events, "txt2img", seed=2, **common)

    assert first["status"] == second["status"] == "SUCCESS"
    assert first["params"]["seed"] == 1 and second["params"]["seed"] == 2
    pixels_1 = image(api, first["outputs"][0]).tobytes()
    pixels_2 = image(api, second["outputs"][0]).tobytes()
    assert pixels_1 != pixels_2


def test_failure_inside_comfyui_names_the_node(api: httpx.Client, events: JobEvents) -> None:
    task = run(
        api, events, "txt2img", prompt="x", steps=1, width=64, height=64, checkpoint="broken.safetensors"
    )

    assert task["status"] == "FAILURE"
    assert task["outputs"] == []
    error = task["error"]
    assert error["type"] == "comfyui_execution_error"
    assert error["node_id"] == "4"
    assert error["node_type"] == "CheckpointLoaderSimple"
    assert "CheckpointLoaderSimple (node 4) failed" in error["message"]


def test_worker_keeps_serving_after_a_failure(api: httpx.Client, events: JobEvents) -> None:
    failed = run(
        api, events, "txt2img", prompt="x", steps=1, width=64, height=64, checkpoint="broken.safetensors"
    )
    ok = run(api, events, "tiny", width=40, height=24, color=0xFF0000)

    assert failed["status"] == "FAILURE"
    assert ok["status"] == "SUCCESS"
    img = image(api, ok["outputs"][0])
    assert img.size == (40, 24)
    assert img.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_invalid_params_never_reach_the_queue(api: httpx.Client, service: Service) -> None:
    import redis

    from comfyjobs import keys

    client = redis.Redis.from_url(service.redis_url)
    before = set(client.scan_iter(match=keys.job("*")))
    resp = api.post("/generate", json={"workflow_id": "txt2img", "params": {"prompt": "x", "steps": 10_000}})

    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "params.steps"
    assert set(client.scan_iter(match=keys.job("*"))) == before
    client.close()


def test_ready_reports_the_worker(api: httpx.Client) -> None:
    body = api.get("/ready").json()
    assert body["ready"] is True
    (worker,) = body["workers"]
    assert worker["device"] == "cpu"
    assert worker["comfyui_ready"] is True


def celery_deliveries(service: Service) -> int:
    """How many tickets Celery's consumer has handed to the service's worker so far (its stats)."""
    worker = f"cpu.{service.worker.pid}@{socket.gethostname()}"
    app = Celery(broker=service.redis_url, set_as_current=False)
    stats = app.control.inspect(destination=[worker], timeout=30, limit=1).stats()
    assert stats and worker in stats, f"no stats from {worker}"
    return int(stats[worker]["total"].get(TAKE_JOB_TASK, 0))


def test_an_idle_worker_takes_the_next_job_itself(
    api: httpx.Client, events: JobEvents, service: Service
) -> None:
    # Two jobs at once: each of the worker's two threads holds a ticket, and once done each waits for
    # the next job on Celery's list itself (WORKER_LINGER_S), so Celery's consumer, at its limit of
    # two tickets, takes none.
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda color: run(api, events, "tiny", color=color), (21, 22)))
    assert [task["status"] for task in done] == ["SUCCESS", "SUCCESS"]
    before = celery_deliveries(service)

    for color in (23, 24):  # one after the other, as to an idle worker
        assert run(api, events, "tiny", color=color)["status"] == "SUCCESS"
    assert celery_deliveries(service) == before


def test_comfyui_keeps_only_the_last_prompts_outputs(
    api: httpx.Client, events: JobEvents, service: Service
) -> None:
    # Stored, a job's outputs are deleted from ComfyUI's output folder once KEEP_PROMPTS later prompts
    # are done (left there, they fill the disk twice and slow every SaveImage, which lists the folder).
    folder = service.data_dir / "comfyui" / "cpu" / "output"
    tasks = [run(api, events, "tiny", color=9000 + n) for n in range(KEEP_PROMPTS + 2)]
    assert [task["status"] for task in tasks] == ["SUCCESS"] * len(tasks)
    names = [task["outputs"][0]["filename"] for task in tasks]  # ComfyUI's names, as stored
    on_disk = {path.name for path in folder.iterdir()}
    assert not on_disk & set(names[:2])
    assert set(names[2:]) <= on_disk

    # The latest prompt again is served from ComfyUI's cache, which reports its file: still there.
    again = run(api, events, "tiny", color=9000 + KEEP_PROMPTS + 1)
    assert again["status"] == "SUCCESS", again["error"]
    assert again["outputs"][0]["filename"] == names[-1]
    assert api.get(again["outputs"][0]["url"]).content == api.get(tasks[-1]["outputs"][0]["url"]).content
