"""Operating it, with real parts: the worker warmed its ComfyUI up before its first job, and /metrics
counts a batch of jobs exactly (as prometheus_client's parser reads it)."""

from __future__ import annotations

import random

import httpx

from tests.api.test_metrics import delta, scrape
from tests.integration.conftest import Service, first_prompt, is_warmup
from tests.support import JobEvents

JOB_TIMEOUT_S = 120


def test_the_worker_warmed_up_before_its_first_job(service: Service, api: httpx.Client) -> None:
    assert is_warmup(first_prompt(f"http://127.0.0.1:{service.env['COMFYUI_BASE_PORT']}"))
    (worker,) = api.get("/ready").json()["workers"]
    assert (worker["state"], worker["warmup_error"]) == ("ready", None)
    assert worker["warmup_s"] is not None


def test_metrics_count_a_batch_of_jobs(api: httpx.Client, events: JobEvents) -> None:
    before = scrape(api)
    ids = []
    for _ in range(5):
        resp = api.post("/workflows/tiny", json={"color": random.randrange(1 << 24)})
        assert resp.status_code == 202
        ids.append(resp.json()["task_id"])
    for task_id in ids:
        assert events.wait_terminal(task_id, JOB_TIMEOUT_S) == "SUCCESS"
    after = scrape(api)

    tiny = {"workflow": "tiny", "tenant": "default"}
    assert delta(before, after, "comfyjobs_jobs_submitted_total", **tiny) == 5
    assert delta(before, after, "comfyjobs_jobs_finished_total", **tiny, status="SUCCESS") == 5
    assert delta(before, after, "comfyjobs_run_seconds_count", workflow="tiny") == 5
    assert delta(before, after, "comfyjobs_queue_wait_seconds_count", workflow="tiny") == 5
    for node_class in ("EmptyImage", "SaveImage"):
        assert delta(before, after, "comfyjobs_node_seconds_count", node_class=node_class) == 5
    assert after[("comfyjobs_workers", frozenset({("state", "ready")}))] == 1
    memory = [k for k in after if k[0] == "comfyjobs_gpu_memory_total_bytes"]
    assert memory and all(after[k] > 0 for k in memory)  # the CPU worker's device, from /system_stats
