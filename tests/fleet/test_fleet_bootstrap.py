"""`comfyjobs fleet bootstrap` against three sshd hosts: the service it brings up runs a job end to end
(API and Redis on one host, the job on a worker of another, outputs in the shared bucket); a second run
changes nothing and says so; no secret is printed; the .env is 0600."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.fleet.conftest import FleetUnderTest
from tests.support import JobEvents, run_to_success

pytestmark = pytest.mark.timeout(1500)  # (the fleet's bootstrap runs in the first test to use it)

JOB_TIMEOUT_S = 300.0


def test_bootstrap_brings_up_a_fleet_that_runs_a_job(test_fleet: FleetUnderTest) -> None:
    first = test_fleet.runs[0].output
    for name in ("api-1", "gpu-1", "gpu-2"):
        assert f"[{name}] install: changed" in first
        assert f"[{name}] services: changed (started" in first
    assert "/ready: 2 of 2 workers ready" in first

    events = JobEvents(test_fleet.redis_url)
    try:
        with test_fleet.api() as api:
            params = {"prompt": "a fleet", "steps": 2, "width": 64, "height": 64}
            task = run_to_success(api, events, "txt2img", params, JOB_TIMEOUT_S)
    finally:
        events.close()
    assert re.fullmatch(r"cpu\.\d+@.+", task["worker"] or ""), task  # the CPU worker of a "GPU" host
    [output] = task["outputs"]
    assert output["url"].startswith(test_fleet.s3_url + "/"), output  # the shared bucket, not a disk


def test_a_second_bootstrap_changes_nothing_and_says_so(test_fleet: FleetUnderTest) -> None:
    again = test_fleet.fleet("bootstrap", "--ref", test_fleet.commit)

    assert again.returncode == 0, again.output[-4000:]
    for name in ("api-1", "gpu-1", "gpu-2"):
        assert f"[{name}] nothing to change: already as the inventory says" in again.output
    assert ": changed" not in again.output


def test_no_secret_is_printed_and_the_env_file_is_private(test_fleet: FleetUnderTest) -> None:
    for ran in test_fleet.runs:
        for name, value in test_fleet.secret_values.items():
            if name.startswith("S3_"):
                continue  # (moto's well-known "testing")
            assert value not in ran.output, f"{name} printed by {' '.join(ran.argv[3:5])}"
    for host in test_fleet.hosts.values():
        env_file = host.root / "opt" / "comfyjobs" / ".env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert test_fleet.secret_values["REDIS_PASSWORD"] in env_file.read_text()
    conf = Path(test_fleet.hosts["api-1"].root / "etc" / "comfyjobs" / "redis.conf")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
