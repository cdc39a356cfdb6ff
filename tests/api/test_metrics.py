"""GET /metrics against a real Redis: what a scrape shows follows the jobs (counted by the scripts that
change them), the workers' observations and their heartbeats, in Prometheus' text format."""

from __future__ import annotations

import json
import re

import httpx
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from comfyjobs import metrics
from comfyjobs.jobs.record import JobStatus
from comfyjobs.jobs.worker_store import JobTimes, Take
from comfyjobs.settings import Settings
from tests.conftest import REPO
from tests.support import worker_store

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    """Every sample of a GET /metrics, as prometheus_client's parser reads it (a TestClient is one)."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_a_scrape_counts_the_jobs_and_their_times(
    client: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    before = scrape(client)
    ids = [client.post("/workflows/tiny", json={"color": i}).json()["task_id"] for i in range(3)]
    waiting = scrape(client)
    assert waiting[("comfyjobs_queue_depth", frozenset({("priority", "5")}))] == 3

    store = worker_store(redis_client, settings)
    times = JobTimes("tiny", 0.2, 0.03, [("EmptyImage", 0.002), ("SaveImage", 0.004)])
    outcomes = [JobStatus.SUCCESS, JobStatus.SUCCESS, JobStatus.FAILURE]
    for i, (task_id, outcome) in enumerate(zip(ids, outcomes, strict=True)):
        claimed = store.take(Take("w-metrics", 60))
        assert claimed is not None and claimed.task_id == task_id
        assert store.update(task_id, status=JobStatus.STARTED, worker="w-metrics", attempts=1)
        mine = {"worker": "w-metrics"}
        assert store.finish(
            task_id, "w-metrics", expect=mine, times=times if i == 0 else None, status=outcome
        ).written
        assert not store.update(task_id, status=JobStatus.CANCELLED)  # final: not counted twice
    after = scrape(client)

    tiny = {"workflow": "tiny", "tenant": "default"}
    assert delta(before, after, "comfyjobs_jobs_submitted_total", **tiny) == 3
    assert delta(before, after, "comfyjobs_jobs_finished_total", **tiny, status="SUCCESS") == 2
    assert delta(before, after, "comfyjobs_jobs_finished_total", **tiny, status="FAILURE") == 1
    assert delta(before, after, "comfyjobs_jobs_finished_total", **tiny, status="CANCELLED") == 0
    assert after[("comfyjobs_queue_depth", frozenset({("priority", "5")}))] == 0

    run = {"workflow": "tiny"}
    assert delta(before, after, "comfyjobs_run_seconds_count", **run) == 1
    assert abs(delta(before, after, "comfyjobs_run_seconds_sum", **run) - 0.03) < 1e-9
    assert delta(before, after, "comfyjobs_run_seconds_bucket", **run, le="0.01") == 0
    assert delta(before, after, "comfyjobs_run_seconds_bucket", **run, le="0.05") == 1
    assert delta(before, after, "comfyjobs_run_seconds_bucket", **run, le="+Inf") == 1
    assert delta(before, after, "comfyjobs_queue_wait_seconds_bucket", **run, le="0.5") == 1
    for node_class in ("EmptyImage", "SaveImage"):
        assert delta(before, after, "comfyjobs_node_seconds_count", node_class=node_class) == 1
    assert delta(before, after, "comfyjobs_node_seconds_bucket", node_class="SaveImage", le="0.001") == 0


def test_workers_appear_by_state(client: TestClient) -> None:
    samples = scrape(client)
    for state in ("starting", "warming", "ready"):
        assert ("comfyjobs_workers", frozenset({("state", state)})) in samples


def test_the_grafana_dashboard_queries_only_what_metrics_exposes(client: TestClient) -> None:
    text = client.get("/metrics").text
    exposed: set[str] = set()
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        exposed |= {name.removesuffix("_total") + suffix for suffix in suffixes[kind]}
    dashboard = json.loads((REPO / "deploy" / "grafana" / "comfyjobs-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bcomfyjobs_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= exposed, f"not exposed: {sorted(queried - exposed)}"
    # Every family /metrics exposes has a panel.
    assert {n.removesuffix("_bucket") for n in queried if n.endswith("_bucket")} == {
        h.name for h in metrics.HISTOGRAMS
    }
    assert {re.sub(r"_total$", "", n) for n in queried} >= {
        "comfyjobs_jobs_submitted",
        "comfyjobs_jobs_finished",
        "comfyjobs_queue_depth",
        "comfyjobs_workers",
        "comfyjobs_comfyui_restarts",
        "comfyjobs_model_loads",
        "comfyjobs_gpu_memory_total_bytes",
        "comfyjobs_webhook_deliveries",
    }
