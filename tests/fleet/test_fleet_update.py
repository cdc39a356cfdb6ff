"""`comfyjobs fleet update` against the three sshd hosts: rolling, one host at a time (the GPU hosts, then
the API host), each drained and seen back before the next; jobs submitted all through it are each run
once and none is lost; a host that cannot be reached stops the update before it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.fleet.conftest import FleetUnderTest
from tests.support import JobEvents

JOB_TIMEOUT_S = 600.0
pytestmark = pytest.mark.timeout(1500)  # (the fleet's bootstrap, when this module runs first, and updates)
PARAMS = {"prompt": "rolling", "steps": 3, "width": 64, "height": 64}


def test_a_rolling_update_during_a_burst_loses_no_job_and_runs_none_twice(test_fleet: FleetUnderTest) -> None:
    release = test_fleet.new_commit("release 2")
    accepted: list[str] = []
    refused: list[str] = []
    done = threading.Event()

    def keep_submitting() -> None:
        with test_fleet.api() as api:
            while not done.is_set():
                try:
                    resp = api.post("/generate", json={"workflow_id": "txt2img", "params": PARAMS})
                except httpx.TransportError:  # the API restarting (its turn): nothing was accepted
                    resp = None
                if resp is not None and resp.status_code == 202:
                    accepted.append(resp.json()["task_id"])
                elif resp is not None:
                    refused.append(f"{resp.status_code} {resp.text[:200]}")
                done.wait(3.0)  # (a client's pace, not a synchronisation)

    with test_fleet.api() as api:  # a burst waiting when the update starts
        for _ in range(6):
            resp = api.post("/generate", json={"workflow_id": "txt2img", "params": PARAMS})
            assert resp.status_code == 202, resp.text
            accepted.append(resp.json()["task_id"])
    submitter = threading.Thread(target=keep_submitting, daemon=True)
    submitter.start()
    try:
        ran = test_fleet.fleet("update", "--ref", release)
    finally:
        done.set()
        submitter.join(timeout=60)

    assert ran.returncode == 0, ran.output[-6000:]
    out = ran.output
    marks = ["[gpu-1] updating", "[gpu-1] back:", "[gpu-2] updating", "[gpu-2] back:", "[api-1] updating"]
    positions = [out.index(mark) for mark in marks]
    assert positions == sorted(positions), out[-6000:]  # one host at a time, each back before the next
    assert "[gpu-1] drained comfyjobs-worker-cpu.service" in out
    assert "update: gpu-1: updated; gpu-2: updated; api-1: updated" in out
    assert {test_fleet.head(h) for h in ("api-1", "gpu-1", "gpu-2")} == {release}
    assert not refused, refused

    events = JobEvents(test_fleet.redis_url)
    try:
        for task_id in accepted:
            assert events.wait_terminal(task_id, JOB_TIMEOUT_S) == "SUCCESS", events.statuses(task_id)
            assert events.statuses(task_id).count("STARTED") == 1, (task_id, events.statuses(task_id))
    finally:
        events.close()
    assert len(accepted) > 6  # (jobs were also submitted while hosts were updated)


@pytest.fixture
def gpu_2_unreachable(test_fleet: FleetUnderTest) -> Iterator[None]:
    host = test_fleet.hosts["gpu-2"]
    host.stop()
    try:
        yield
    finally:
        host.start()


def test_an_unreachable_host_stops_the_update_before_it(
    test_fleet: FleetUnderTest, gpu_2_unreachable: None
) -> None:
    before = {h: test_fleet.head(h) for h in ("api-1", "gpu-1")}
    release = test_fleet.new_commit("release 3")

    ran = test_fleet.fleet("update", "--ref", release)

    assert ran.returncode != 0
    assert "stopped at gpu-2 (unreachable: SSH did not connect)" in ran.output, ran.output[-4000:]
    assert "[api-1] not updated: the update stopped at gpu-2" in ran.output
    assert test_fleet.head("gpu-1") == release  # before it in the order: updated
    assert test_fleet.head("api-1") == before["api-1"]  # after it: left as it was
