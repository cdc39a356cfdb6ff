"""DELETE /tasks/{id} on queued and finished jobs (the running case, with ComfyUI, is in integration)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from comfyjobs.jobs.record import JobStatus, utc_now
from tests.api.conftest import LiveApi
from tests.api.test_task_feed import submit, take
from tests.support import sse_events


@pytest.fixture
def api(live_api: LiveApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api.url, timeout=30) as client:
        yield client


def test_cancel_a_queued_job(api: httpx.Client, live_api: LiveApi) -> None:
    first, second = submit(api), submit(api)

    resp = api.delete(f"/tasks/{first}")

    assert resp.status_code == 200
    task = resp.json()
    assert task["status"] == "CANCELLED"
    assert task["error"]["type"] == "cancelled"
    assert task["finished_at"] is not None
    assert api.get(f"/tasks/{second}").json()["queue"] == {"position": 1, "waiting": 1, "blocked": None}
    # A worker that later receives the delivery finds a final state and cannot start it.
    assert not live_api.store.update(first, status=JobStatus.STARTED, started_at=utc_now())
    with api.stream("GET", f"/tasks/{first}/events") as stream:
        assert [e.event for e in sse_events(stream.iter_lines())] == ["queued", "cancelled"]


def test_cancel_a_running_job_records_it_at_once(api: httpx.Client, live_api: LiveApi) -> None:
    task_id = submit(api)
    take(live_api.store, task_id)
    assert api.delete(f"/tasks/{task_id}").json()["status"] == "CANCELLED"
    # Whatever the worker writes afterwards (its interrupted run ending) is refused.
    assert not live_api.store.update(task_id, status=JobStatus.FAILURE)
    assert api.get(f"/tasks/{task_id}").json()["status"] == "CANCELLED"


def test_finished_or_unknown_tasks_cannot_be_cancelled(api: httpx.Client, live_api: LiveApi) -> None:
    task_id = submit(api)
    take(live_api.store, task_id)
    assert live_api.store.update(task_id, status=JobStatus.SUCCESS, finished_at=utc_now())

    finished = api.delete(f"/tasks/{task_id}")
    assert finished.status_code == 409
    assert finished.json()["error"]["code"] == "task_finished"
    assert "SUCCESS" in finished.json()["error"]["message"]

    again = api.delete(f"/tasks/{submit(api)}")
    assert again.status_code == 200
    assert api.delete(f"/tasks/{again.json()['task_id']}").status_code == 409
    assert api.delete("/tasks/nope").status_code == 404
