"""`comfyjobs fleet status` and `fleet logs` against the three sshd hosts: one table for the fleet, the
units' journals merged in time order; a host whose sshd is stopped is reported, and the verb fails."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.fleet.conftest import FleetUnderTest

pytestmark = pytest.mark.timeout(1500)  # (the fleet's bootstrap runs in the first test to use it)

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+) (\S+): (.*)$")


def _row(output: str, host: str) -> str:
    """The table's first line of ``host``'s row."""
    return next(line for line in output.splitlines() if re.match(rf"^\W*{re.escape(host)}\b", line))


def test_status_shows_every_host_its_units_and_workers_and_the_queue(test_fleet: FleetUnderTest) -> None:
    ran = test_fleet.fleet("status")

    assert ran.returncode == 0, ran.output[-4000:]
    assert "all well" in ran.output
    assert re.search(r"queue: 0 waiting, 0 running; catalog [0-9a-f]{12}", ran.output), ran.output
    for host in ("gpu-1", "gpu-2"):
        row = _row(ran.output, host)
        assert "yes" in row and "worker-cpu active" in row and re.search(r"cpu ready, \d+ jobs, idle", row), (
            row
        )
        assert "0.3.75" in row  # its ComfyUI
    api = _row(ran.output, "api-1")
    assert "redis,api" in api and "redis active" in api


def test_logs_merge_every_hosts_units_in_time_order_with_the_host_in_front(
    test_fleet: FleetUnderTest,
) -> None:
    ran = test_fleet.fleet("logs", "--since", "1h", "--grep", "comfyui ready")

    assert ran.returncode == 0, ran.output[-4000:]
    lines = [m for m in map(LOG_LINE.match, ran.output.splitlines()) if m]
    assert {m.group(2) for m in lines} == {"gpu-1", "gpu-2"}  # (the API logs no ComfyUI start)
    assert all(m.group(3) == "comfyjobs-worker-cpu" and "ComfyUI ready" in m.group(4) for m in lines)
    stamps = [m.group(1) for m in lines]
    assert stamps == sorted(stamps)

    everything = test_fleet.fleet("logs", "--since", "1h")
    hosts = {m.group(2) for m in map(LOG_LINE.match, everything.output.splitlines()) if m}
    assert hosts == {"api-1", "gpu-1", "gpu-2"}
    for value in test_fleet.secret_values.values():
        if len(value) > 8:
            assert value not in everything.output


def test_logs_refuse_a_bad_since_before_asking_any_host(test_fleet: FleetUnderTest) -> None:
    ran = test_fleet.fleet("logs", "--since", "ten minutes")

    assert ran.returncode != 0
    assert "--since 'ten minutes': give a duration such as 90s, 10m, 2h or 1d" in ran.output


@pytest.fixture
def gpu_2_unreachable(test_fleet: FleetUnderTest) -> Iterator[None]:
    host = test_fleet.hosts["gpu-2"]
    host.stop()  # its sshd only: its worker goes on
    try:
        yield
    finally:
        host.start()


def test_status_says_a_host_is_unreachable_and_fails(
    test_fleet: FleetUnderTest, gpu_2_unreachable: None
) -> None:
    ran = test_fleet.fleet("status")

    assert ran.returncode != 0
    assert "unreachable" in _row(ran.output, "gpu-2")
    assert "problem: gpu-2: unreachable (SSH)" in ran.output
    assert "yes" in _row(ran.output, "gpu-1")  # the others are still reported
