"""Warm-up with a stand-in ComfyUI client: the configured graph runs, jobs wait for the ComfyUI process
that is running now to be warmed, a failure is reported and not fatal, a bad setting stops the start."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.process import ComfyProcess
from comfyjobs.errors import ComfyExecutionError, ConfigError
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.registry import Registry
from comfyjobs.worker.warmup import Warmup
from tests.conftest import REPO


class FakeComfy:
    """Stands in for ComfyClient.run: records graphs; may fail, or block until released."""

    def __init__(self, fail: bool = False) -> None:
        self.graphs: list[Mapping[str, Any]] = []
        self.fail = fail
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def run(self, graph: Mapping[str, Any], **_: Any) -> list[Any]:
        self.entered.set()
        self.release.wait(10)
        self.graphs.append(graph)
        if self.fail:
            raise ComfyExecutionError("CheckpointLoaderSimple (node 4) failed: out of memory")
        return []


class FakeProcess:
    """Stands in for the worker's ComfyProcess: a pid (a restart is a new one)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.killed = False

    def is_running(self) -> bool:
        return True

    def kill(self) -> None:
        self.killed = True


def process(pid: int) -> ComfyProcess:
    return FakeProcess(pid)  # type: ignore[return-value]  # (pid, is_running and kill are used)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO / "manifests", REPO / "workflows")


def warmup(registry: Registry, workflow: str | None = "tiny", **params: Any) -> Warmup:
    return Warmup(registry, workflow, params or {"color": 4242}, lambda _: ["smoke-sd15.safetensors"], 60, 30)


def client(fake: FakeComfy) -> ComfyClient:
    return fake  # type: ignore[return-value]  # (only .run is used)


def test_jobs_wait_for_the_running_comfyuis_warmup(registry: Registry) -> None:
    fake, warm = FakeComfy(), warmup(registry)
    fake.release.clear()
    running = threading.Thread(target=warm.run, args=(client(fake), process(101)))
    running.start()
    assert fake.entered.wait(10)  # under way, in that thread
    assert warm.warming(101) and not warm.ensure(client(fake), process(101), timeout_s=0.05)
    fake.release.set()
    assert warm.ensure(client(fake), process(101), timeout_s=10)
    running.join()
    assert warm.error is None and warm.seconds is not None and not warm.warming(101)
    assert [g["1"]["inputs"]["color"] for g in fake.graphs] == [4242]  # WARMUP_PARAMS applied, once
    # ComfyUI restarted (another process): not warm until warmed again.
    assert warm.warming(202)
    warm.run(client(fake), process(202))
    assert warm.ensure(client(fake), process(202), timeout_s=0) and len(fake.graphs) == 2


def test_a_job_thread_warms_a_comfyui_nobody_warmed(registry: Registry) -> None:
    fake, warm = FakeComfy(), warmup(registry)  # e.g. the restart's warm-up never began
    assert warm.ensure(client(fake), process(303), timeout_s=0)
    assert len(fake.graphs) == 1 and not warm.warming(303)


def test_a_failed_warmup_is_reported_and_jobs_go_on(registry: Registry) -> None:
    warm = warmup(registry)
    warm.run(client(FakeComfy(fail=True)), process(7))
    assert warm.error is not None and "out of memory" in warm.error
    assert warm.ensure(client(FakeComfy()), process(7), timeout_s=0)  # not tried again for this ComfyUI


def test_without_a_warmup_nothing_waits(registry: Registry) -> None:
    fake, warm = FakeComfy(), warmup(registry, None)
    warm.run(client(fake), process(1))
    assert fake.graphs == [] and warm.ensure(client(fake), process(99), 0) and not warm.warming(99)


@pytest.mark.parametrize(
    ("workflow", "params", "message"),
    [
        ("nope", {}, "no workflow 'nope'"),
        ("tiny", {"color": "red"}, "WARMUP_PARAMS: params.color: Input should be a valid integer"),
        ("upscale", {}, "takes media"),
    ],
)
def test_a_bad_warmup_setting_stops_the_start(
    registry: Registry, workflow: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Warmup(registry, workflow, params, lambda _: [], 60, 30)
