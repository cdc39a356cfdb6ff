"""Following a task: queue position, the long poll, and the SSE stream, against a real uvicorn and Redis.

No worker runs here: the test moves each job along through the worker's own JobStore, so every change
is a real Redis update and every event comes from the real stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from comfyjobs import keys
from comfyjobs.jobs.record import JobStatus, Progress, StoredOutput, utc_now
from comfyjobs.jobs.worker_store import JobStore
from tests.api.conftest import LiveApi
from tests.support import SseEvent, sse_events, without_links


@pytest.fixture
def api(live_api: LiveApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api.url, timeout=30) as client:
        yield client


def submit(api: httpx.Client) -> str:
    resp = api.post("/generate", json={"workflow_id": "tiny", "params": {"color": 7}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


def take(store: JobStore, task_id: str) -> None:
    assert store.update(task_id, status=JobStatus.STARTED, worker="w-test", attempts=1, started_at=utc_now())


def step(store: JobStore, task_id: str, value: int, maximum: int = 3) -> None:
    progress = Progress(value=value, max=maximum, percent=round(100 * value / maximum, 1), node="3")
    assert store.update(task_id, status=JobStatus.PROGRESS, progress=progress)


def succeed(store: JobStore, task_id: str) -> None:
    output = StoredOutput(filename="out_00001_.png", content_type="image/png", node_id="9", size_bytes=68)
    assert store.update(task_id, status=JobStatus.SUCCESS, outputs=[output], finished_at=utc_now())


def stream_ids(redis_client: redis.Redis, task_id: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in redis_client.xrange(keys.job_events(task_id))]


def records(events: Iterator[SseEvent], count: int) -> list[SseEvent]:
    """The next ``count`` events that carry data (heartbeats skipped)."""
    got: list[SseEvent] = []
    for event in events:
        if event.data is not None:
            got.append(event)
            if len(got) == count:
                break
    return got


# --- queue position ------------------------------------------------------------------------------------


def test_waiting_jobs_show_their_place_in_line(api: httpx.Client, live_api: LiveApi) -> None:
    first, second, third = submit(api), submit(api), submit(api)

    assert api.get(f"/tasks/{first}").json()["queue"] == {"position": 1, "waiting": 3, "blocked": None}
    assert api.get(f"/tasks/{third}").json()["queue"] == {"position": 3, "waiting": 3, "blocked": None}

    take(live_api.store, first)

    assert api.get(f"/tasks/{first}").json()["queue"] is None  # a worker has it
    assert api.get(f"/tasks/{second}").json()["queue"] == {"position": 1, "waiting": 2, "blocked": None}
    assert api.get(f"/tasks/{third}").json()["queue"] == {"position": 2, "waiting": 2, "blocked": None}


# --- SSE -----------------------------------------------------------------------------------------------


def test_stream_follows_the_record_to_the_end(
    api: httpx.Client, live_api: LiveApi, redis_client: redis.Redis
) -> None:
    task_id = submit(api)
    with api.stream("GET", f"/tasks/{task_id}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.iter_lines())
        (queued,) = records(events, 1)
        assert queued.event == "queued"
        assert queued.data["queue"] == {"position": 1, "waiting": 1, "blocked": None}

        take(live_api.store, task_id)
        for value in (1, 2, 3):
            step(live_api.store, task_id, value)
        succeed(live_api.store, task_id)

        rest = list(events)  # ends by itself: the server closes after the final event

    seen = [queued, *(e for e in rest if e.data is not None)]
    assert [e.event for e in seen] == ["queued", "started", "progress", "progress", "progress", "success"]
    assert [e.id for e in seen] == stream_ids(redis_client, task_id)  # one event per record change
    assert [e.data["progress"]["value"] for e in seen[2:5]] == [1, 2, 3]
    final = seen[-1].data
    assert final["status"] == "SUCCESS"
    assert final["outputs"][0]["url"].startswith(
        f"http://api.example:9000/outputs/{task_id}/out_00001_.png?expires="
    )
    assert without_links(final) == without_links(api.get(f"/tasks/{task_id}").json())


def test_stream_resumes_after_last_event_id(api: httpx.Client, live_api: LiveApi) -> None:
    task_id = submit(api)
    take(live_api.store, task_id)
    with api.stream("GET", f"/tasks/{task_id}/events") as resp:
        queued, started = records(sse_events(resp.iter_lines()), 2)
    assert (queued.event, started.event) == ("queued", "started")

    # While nobody listens, the job moves on.
    step(live_api.store, task_id, 1)
    step(live_api.store, task_id, 2)

    headers = {"Last-Event-ID": str(started.id)}
    with api.stream("GET", f"/tasks/{task_id}/events", headers=headers) as resp:
        events = sse_events(resp.iter_lines())
        missed = records(events, 2)
        succeed(live_api.store, task_id)
        rest = [e for e in events if e.data is not None]

    assert [e.event for e in missed + rest] == ["progress", "progress", "success"]
    assert [e.data["progress"]["value"] for e in missed] == [1, 2]

    # The same, given as a query parameter (EventSource cannot set headers on its first request).
    with api.stream("GET", f"/tasks/{task_id}/events", params={"after": missed[-1].id}) as resp:
        assert [e.event for e in sse_events(resp.iter_lines())] == ["success"]

    # Resuming after the final event: 204, which tells a browser's EventSource to stop reconnecting.
    final_id = rest[-1].id
    assert api.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(final_id)}).status_code == 204


def test_finished_task_streams_its_history_and_closes(api: httpx.Client, live_api: LiveApi) -> None:
    task_id = submit(api)
    take(live_api.store, task_id)
    assert live_api.store.update(
        task_id,
        status=JobStatus.FAILURE,
        error={"type": "comfy_execution_error", "message": "boom", "node_id": "4"},
        finished_at=utc_now(),
    )

    with api.stream("GET", f"/tasks/{task_id}/events") as resp:
        events = list(sse_events(resp.iter_lines()))

    assert [e.event for e in events] == ["queued", "started", "failure"]
    assert events[-1].data["error"]["message"] == "boom"


def test_idle_stream_sends_heartbeats(api: httpx.Client) -> None:
    task_id = submit(api)
    with api.stream("GET", f"/tasks/{task_id}/events") as resp:
        events = sse_events(resp.iter_lines())
        assert next(events).event == "queued"
        assert next(events).comments == ["heartbeat"]  # nothing happened: a keep-alive comment


def test_stream_announces_moving_up_in_line(api: httpx.Client, live_api: LiveApi) -> None:
    first, second = submit(api), submit(api)
    with api.stream("GET", f"/tasks/{second}/events") as resp:
        events = sse_events(resp.iter_lines())
        (queued,) = records(events, 1)
        assert queued.data["queue"]["position"] == 2

        take(live_api.store, first)
        (moved,) = records(events, 1)

    assert moved.event == "queued"
    assert moved.data["queue"] == {"position": 1, "waiting": 1, "blocked": None}
    assert moved.id is None  # not a change of this record: a resume must not skip past it


def test_stream_errors(api: httpx.Client) -> None:
    unknown = api.get("/tasks/nope/events")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "task_not_found"

    task_id = submit(api)
    bad = api.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "Last-Event-ID"


# --- long poll -----------------------------------------------------------------------------------------


def long_poll_in_background(api: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """Starts a long poll on another thread; the result dict fills when it answers."""
    result: dict[str, Any] = {}

    def run() -> None:
        # A read timeout well under `wait`: answering only at the deadline would fail the request.
        resp = api.get(path, params=params, timeout=httpx.Timeout(30, read=20))
        result.update(status_code=resp.status_code, body=resp.json())

    thread = threading.Thread(target=run)
    thread.start()
    result["thread"] = thread
    return result


def test_long_poll_answers_when_the_task_changes(api: httpx.Client, live_api: LiveApi) -> None:
    task_id = submit(api)
    seen = api.get(f"/tasks/{task_id}").json()

    poll = long_poll_in_background(api, f"/tasks/{task_id}", {"wait": 120, "since": seen["last_event_id"]})
    take(live_api.store, task_id)
    poll["thread"].join()

    assert poll["status_code"] == 200
    assert poll["body"]["status"] == "STARTED"
    assert poll["body"]["last_event_id"] != seen["last_event_id"]


def test_long_poll_counts_moving_up_in_line_as_a_change(api: httpx.Client, live_api: LiveApi) -> None:
    first, second = submit(api), submit(api)
    seen = api.get(f"/tasks/{second}").json()
    assert seen["queue"]["position"] == 2

    params = {"wait": 120, "since": seen["last_event_id"], "position": 2}
    poll = long_poll_in_background(api, f"/tasks/{second}", params)
    take(live_api.store, first)
    poll["thread"].join()

    assert poll["body"]["queue"] == {"position": 1, "waiting": 1, "blocked": None}
    # Asked again with the old position: it moved since, so the answer comes at once.
    again = api.get(f"/tasks/{second}", params=params, timeout=httpx.Timeout(30, read=20))
    assert again.json()["queue"] == {"position": 1, "waiting": 1, "blocked": None}


def test_long_poll_answers_at_once_when_already_changed_or_finished(
    api: httpx.Client, live_api: LiveApi
) -> None:
    task_id = submit(api)
    before = api.get(f"/tasks/{task_id}").json()["last_event_id"]
    take(live_api.store, task_id)

    # Changed since `since`: no wait at all (the read timeout is far below `wait`).
    quick = httpx.Timeout(30, read=20)
    changed = api.get(f"/tasks/{task_id}", params={"wait": 120, "since": before}, timeout=quick)
    assert changed.json()["status"] == "STARTED"

    succeed(live_api.store, task_id)
    done = api.get(f"/tasks/{task_id}", params={"wait": 120}, timeout=quick)
    assert done.json()["status"] == "SUCCESS"


def test_long_poll_parameters_are_checked(api: httpx.Client) -> None:
    task_id = submit(api)
    too_long = api.get(f"/tasks/{task_id}", params={"wait": 100000})
    assert too_long.status_code == 422
    assert too_long.json()["error"]["fields"][0]["field"] == "wait"
    bad_since = api.get(f"/tasks/{task_id}", params={"wait": 1, "since": "x"})
    assert bad_since.json()["error"]["fields"][0]["field"] == "since"
    assert api.get("/tasks/nope", params={"wait": 1}).status_code == 404
