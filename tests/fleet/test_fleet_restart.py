"""`comfyjobs fleet restart workers` against the three sshd hosts: the worker units restarted one host
at a time, each drained and seen back before the next."""

from __future__ import annotations

import json

import pytest

from tests.fleet.conftest import FleetUnderTest

pytestmark = pytest.mark.timeout(1500)  # (the fleet's bootstrap, when this module runs first)

WORKER = "comfyjobs-worker-cpu.service"


def _worker_pid(test_fleet: FleetUnderTest, host: str) -> int:
    state = test_fleet.hosts[host].units.run_dir / f"{WORKER}.json"
    return int(json.loads(state.read_text())["pid"])


def test_restart_workers_goes_host_by_host_and_each_comes_back(test_fleet: FleetUnderTest) -> None:
    before = {h: _worker_pid(test_fleet, h) for h in ("gpu-1", "gpu-2")}

    ran = test_fleet.fleet("restart", "workers")

    assert ran.returncode == 0, ran.output[-4000:]
    marks = ["[gpu-1] restarting", "[gpu-1] back:", "[gpu-2] restarting", "[gpu-2] back:"]
    positions = [ran.output.index(mark) for mark in marks]
    assert positions == sorted(positions), ran.output[-4000:]
    assert "restart: gpu-1: restarted; gpu-2: restarted; api-1: unchanged" in ran.output
    after = {h: _worker_pid(test_fleet, h) for h in ("gpu-1", "gpu-2")}
    assert all(after[h] != before[h] for h in after), (before, after)


def test_restart_refuses_what_is_not_a_kind_of_unit(test_fleet: FleetUnderTest) -> None:
    ran = test_fleet.fleet("restart", "everything")

    assert ran.returncode != 0
    assert "invalid choice: 'everything'" in ran.output
