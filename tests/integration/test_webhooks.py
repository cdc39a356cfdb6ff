"""Webhooks with real parts: a second API process with WEBHOOK_SECRET on the session's Redis and worker, a
local receiver that fails its first deliveries, then is down while that API restarts, and still gets every
event, each exactly as signed."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager
from typing import Any

import httpx

from tests.integration.conftest import Service, api_process
from tests.support import JobEvents, free_port, wait_for
from tests.webhooks.receiver import Received, Receiver
from tests.webhooks.test_dispatcher import SECRET, verified

JOB_TIMEOUT_S = 120
WEBHOOK_TIMEOUT_S = 60


def hooked_api(service: Service, port: int) -> AbstractContextManager[httpx.Client]:
    return api_process(
        service,
        port,
        "api-webhooks.log",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_RETRY_BASE_S="0.1",  # 0.1, 0.4, 1.6, 6.4 s ... between attempts
        WEBHOOK_MAX_ATTEMPTS="10",
        WEBHOOK_URL_ALLOWLIST="127.0.0.1",
    )


def delivered(requests: list[Received], task_id: str) -> set[str]:
    """The event types of ``task_id`` the receiver has taken (it answered 2xx; the others failed)."""
    return {e["type"] for e in map(verified, requests) if e["data"]["task_id"] == task_id}


def test_every_event_arrives_signed_through_failures_and_an_api_restart(
    service: Service, events: JobEvents
) -> None:
    def answer(n: int, _: Received) -> int:
        return 500 if n <= 2 else 200  # the first two deliveries fail

    receiver = Receiver(answer)
    receiver.start()
    port = free_port()
    try:
        with hooked_api(service, port) as api:
            resp = api.post(
                "/workflows/tiny",
                params={"webhook_url": receiver.url()},
                json={"color": random.randrange(1 << 24)},
            )
            assert resp.status_code == 202, resp.text
            first = resp.json()["task_id"]
            assert events.wait_terminal(first, JOB_TIMEOUT_S) == "SUCCESS"
            receiver.wait(
                lambda r: len(r) >= 4 and delivered(r[2:], first) == {"task.started", "task.succeeded"},
                WEBHOOK_TIMEOUT_S,
                "the first task's events, after two failed deliveries",
            )
            view: dict[str, Any] = api.get(f"/tasks/{first}").json()
            assert view["webhook_url"] == receiver.url()

            receiver.stop()  # down from here...
            resp = api.post(
                "/generate",
                json={
                    "workflow_id": "tiny",
                    "params": {"color": random.randrange(1 << 24)},
                    "webhook_url": receiver.url(),
                },
            )
            assert resp.status_code == 202, resp.text
            second = resp.json()["task_id"]
            assert events.wait_terminal(second, JOB_TIMEOUT_S) == "SUCCESS"
            wait_for(
                lambda: (api.get(f"/tasks/{second}").json().get("webhook") or {}).get("attempts", 0) >= 2,
                timeout_s=WEBHOOK_TIMEOUT_S,
                what="failed deliveries to the receiver that is down",
            )
            failed = api.get(f"/tasks/{second}").json()["webhook"]
            assert failed["last_status"] is None and failed["delivered_at"] is None  # no answer at all
        # ...through the API's restart.
        receiver.start()
        with hooked_api(service, port) as api:
            everything = receiver.wait(
                lambda r: delivered(r, second) == {"task.started", "task.succeeded"},
                WEBHOOK_TIMEOUT_S,
                "the second task's events once the receiver is back",
            )
            done = api.get(f"/tasks/{second}").json()["webhook"]
            assert done["last_status"] == 200 and done["delivered_at"] is not None
    finally:
        receiver.stop()

    # Every request verifies; each event was taken once (2xx) under one id, which every retry kept.
    as_then = {"task.started": "STARTED", "task.succeeded": "SUCCESS"}
    taken: dict[str, list[str]] = {}
    for n, request in enumerate(everything, start=1):
        event = verified(request)
        assert event["data"]["status"] == as_then[event["type"]]
        if answer(n, request) == 200:
            taken.setdefault(request.headers["webhook-id"], []).append(event["type"])
    assert sorted(t for types in taken.values() for t in types) == sorted([*as_then] * 2)
    assert all(len(types) == 1 for types in taken.values())
