"""The one queue with a real worker and ComfyUI: a priority-9 job overtakes a line of priority-0 jobs, two
tenants take turns, and a job the worker already queued in its ComfyUI (pipelined) never runs once
cancelled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from comfyjobs import keys
from comfyjobs.jobs.store import text
from comfyjobs.settings import Settings
from tests.integration.conftest import Service, api_process
from tests.integration.test_cancel import LONG, sampling
from tests.integration.test_service import submit
from tests.support import JobEvents, free_port, wait_for

JOB_TIMEOUT_S = 240


def taken_order(service: Service, task_ids: list[str]) -> list[str]:
    """These jobs in the order they were taken: the order they left the line (the queue's departures
    stream, appended by each take in its own step). Not their ``started_at``: each is its taking thread's
    clock as the take was asked for, and the worker's two threads may take at the same moment."""
    queue = service.env.get("QUEUE_NAME") or Settings.model_fields["queue_name"].default
    with redis.Redis.from_url(service.redis_url) as client:
        left = [text(fields[b"task_id"]) for _, fields in client.xrange(keys.queue_departures(queue))]
    return [task_id for task_id in left if task_id in task_ids]


def tiny(api: httpx.Client, priority: int, headers: dict[str, str] | None = None) -> str:
    resp = api.post("/workflows/tiny", params={"priority": priority}, json={"color": 3}, headers=headers)
    assert resp.status_code == 202, resp.text
    assert resp.json()["priority"] == priority
    return str(resp.json()["task_id"])


def taken(api: httpx.Client, task_id: str) -> bool:
    return bool(api.get(f"/tasks/{task_id}").json()["status"] != "PENDING")


def occupy(api: httpx.Client, events: JobEvents) -> str:
    """A long job, sampling: the worker's ComfyUI is busy with it until it is cancelled."""
    blocker = submit(api, "txt2img", **LONG)
    events.wait_until(blocker, sampling, timeout_s=JOB_TIMEOUT_S, what="the blocker's sampler")
    return blocker


def test_a_priority_9_job_starts_before_a_line_of_priority_0_jobs(
    service: Service, api: httpx.Client, events: JobEvents
) -> None:
    blocker = occupy(api, events)
    low = [tiny(api, 0) for _ in range(20)]
    # The worker's second thread took the first of them at once (queued in ComfyUI behind the blocker).
    wait_for(
        lambda: api.get(f"/tasks/{low[0]}").json()["status"] != "PENDING", timeout_s=30, what="pipelining"
    )
    urgent = tiny(api, 9)
    assert api.get(f"/tasks/{urgent}").json()["queue"]["position"] == 1
    assert api.get(f"/tasks/{low[1]}").json()["queue"]["position"] == 2

    assert api.delete(f"/tasks/{blocker}").status_code == 200
    for task_id in [urgent, *low]:
        assert events.wait_terminal(task_id, JOB_TIMEOUT_S) == "SUCCESS"
    assert taken_order(service, [urgent, *low[1:]])[0] == urgent


@pytest.fixture
def tenanted_api(service: Service) -> Iterator[httpx.Client]:
    """A second API process with keys, on the same Redis and queue (the API is stateless): its jobs go to
    the same worker."""
    with api_process(service, free_port(), "api-tenanted.log", API_KEYS="alice:k-alice,bob:k-bob") as client:
        yield client


def test_two_tenants_take_turns(
    service: Service, tenanted_api: httpx.Client, api: httpx.Client, events: JobEvents
) -> None:
    alice, bob = {"X-API-Key": "k-alice"}, {"X-API-Key": "k-bob"}
    blocker = occupy(api, events)
    flood = [tiny(tenanted_api, 5, alice) for _ in range(6)]
    wait_for(
        lambda: api.get(f"/tasks/{flood[0]}").json()["status"] != "PENDING", timeout_s=30, what="pipelining"
    )
    single = tiny(tenanted_api, 5, bob)
    position = tenanted_api.get(f"/tasks/{single}", headers=bob).json()["queue"]["position"]
    assert position == 2  # alice's next, then bob's: not behind all of alice's

    assert api.delete(f"/tasks/{blocker}").status_code == 200
    for task_id in [*flood, single]:
        assert events.wait_terminal(task_id, JOB_TIMEOUT_S) == "SUCCESS"
    assert taken_order(service, [*flood, single]).index(single) == 2


def test_a_cancelled_job_queued_in_comfyui_never_runs(
    service: Service, api: httpx.Client, events: JobEvents
) -> None:
    blocker = occupy(api, events)
    ahead = submit(api, "tiny", color=9)
    # Taken by the worker's second thread and submitted to ComfyUI, where it waits behind the blocker.
    events.wait_until(ahead, lambda changes: any(c.get("status") == "STARTED" for c in changes),
                      timeout_s=JOB_TIMEOUT_S, what="the queued-ahead job taken")  # fmt: skip
    comfy = f"http://127.0.0.1:{service.env['COMFYUI_BASE_PORT']}"

    def queued_in_comfyui() -> bool:
        pending: list[Any] = httpx.get(f"{comfy}/queue", timeout=10).json()["queue_pending"]
        return len(pending) == 1

    wait_for(queued_in_comfyui, timeout_s=30, what="the prompt queued in ComfyUI")
    assert api.delete(f"/tasks/{ahead}").json()["status"] == "CANCELLED"
    wait_for(lambda: not queued_in_comfyui(), timeout_s=30, what="the prompt out of ComfyUI's queue")
    assert api.delete(f"/tasks/{blocker}").status_code == 200

    after = submit(api, "tiny", color=4)
    assert events.wait_terminal(after, JOB_TIMEOUT_S) == "SUCCESS"
    assert events.statuses(ahead) == ["PENDING", "STARTED", "CANCELLED"]
    history = httpx.get(f"{comfy}/history", timeout=30).json()
    colors = [entry["prompt"][2].get("1", {}).get("inputs", {}).get("color") for entry in history.values()]
    assert 9 not in colors  # ComfyUI never executed it
