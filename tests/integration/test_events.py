"""The events stream and the long poll against the real service: a real job, run by ComfyUI on CPU."""

from __future__ import annotations

import httpx
import redis

from comfyjobs import keys
from tests.integration.conftest import Service
from tests.integration.test_service import submit
from tests.support import JobEvents, SseEvent, sse_events, without_links

SMOKE = {"prompt": "a red fox", "steps": 4, "width": 128, "height": 128}


def data_events(events: list[SseEvent]) -> list[SseEvent]:
    """The task's own events: not heartbeats, nor preview frames (the service runs with previews on)."""
    return [e for e in events if e.data is not None and e.event != "preview"]


def test_stream_matches_the_record_and_resumes(
    service: Service, api: httpx.Client, events: JobEvents
) -> None:
    task_id = submit(api, "txt2img", **SMOKE)

    # Follow until the first sampler step, then drop the connection.
    first: list[SseEvent] = []
    with api.stream("GET", f"/tasks/{task_id}/events") as resp:
        for event in sse_events(resp.iter_lines()):
            first.append(event)
            if event.event != "preview" and event.data and event.data["progress"]["node_type"] == "KSampler":
                break
    last_seen = data_events(first)[-1].id
    assert last_seen is not None

    # Reconnect where we left off; the stream ends by itself at the final event.
    with api.stream("GET", f"/tasks/{task_id}/events", headers={"Last-Event-ID": last_seen}) as resp:
        assert resp.status_code == 200
        rest = list(sse_events(resp.iter_lines()))

    seen = data_events(first) + data_events(rest)
    assert seen[-1].event == "success"
    assert events.wait_terminal(task_id, 10) == "SUCCESS"
    with redis.Redis.from_url(service.redis_url) as client:
        record_ids = [i.decode() for i, _ in client.xrange(keys.job_events(task_id))]
    # Position moves carry no id; every record change arrived exactly once, in order, across the drop.
    assert [e.id for e in seen if e.id] == record_ids
    assert [e.data["status"] for e in seen if e.id] == events.statuses(task_id)
    steps = [
        e.data["progress"]["value"]
        for e in seen
        if e.data["progress"]["node_type"] == "KSampler" and e.data["progress"]["max"]
    ]
    # Progress is written at most four times a second: steps may be coalesced, never reordered; the
    # outcome carries the sampler's end.
    assert steps == sorted(set(steps))
    final = seen[-1].data["progress"]
    assert (final["value"], final["max"], final["percent"]) == (4, 4, 100.0)
    assert without_links(seen[-1].data) == without_links(api.get(f"/tasks/{task_id}").json())
    assert seen[-1].data["outputs"][0]["url"].split("?")[0].endswith(".png")


def test_long_poll_follows_a_real_job(api: httpx.Client) -> None:
    task_id = submit(api, "tiny", color=3)
    task = api.get(f"/tasks/{task_id}").json()
    statuses = [task["status"]]
    # Each answer comes on a change, so the loop ends in a handful of requests whatever the timing.
    for _ in range(50):
        if task["status"] in ("SUCCESS", "FAILURE"):
            break
        task = api.get(
            f"/tasks/{task_id}", params={"wait": 60, "since": task["last_event_id"]}, timeout=90
        ).json()
        statuses.append(task["status"])
    assert statuses[-1] == "SUCCESS"
    assert len(statuses) < 50
