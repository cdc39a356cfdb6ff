"""Warm-up with a stand-in ComfyUI client: the configured graph runs, jobs wait for the ComfyUI process
that is running now to be warmed, a failure is reported and not fatal, a bad setting stops the start."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from comfyjobs.comfy.client import ComfyClient
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

    def run(self, graph: Mapping[str, Any], **_: Any) -> list[Any]:
        self.release.wait(10)
        self.graphs.append(graph)
        if self.fail:
            raise ComfyExecutionError("CheckpointLoaderSimple (node 4) failed: out of memory")
        return []


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO / "manifests", REPO / "workflows")


def warmup(registry: Registry, workflow: str | None = "tiny", **params: Any) -> Warmup:
    return Warmup(registry, workflow, params or {"color": 4242}, lambda _: ["smoke-sd15.safetensors"], 60)


def client(fake: FakeComfy) -> ComfyClient:
    return fake  # type: ignore[return-value]  # (only .run is used)


def test_jobs_wait_for_the_running_comfyuis_warmup(registry: Registry) -> None:
    fake, warm = FakeComfy(), warmup(registry)
    fake.release.clear()
    running = threading.Thread(target=warm.run, args=(client(fake), 101))
    running.start()
    assert not warm.wait(101, timeout_s=0.05)  # still warming
    assert warm.warming(101)
    fake.release.set()
    assert warm.wait(101, timeout_s=10)
    running.join()
    assert warm.state == "warm" and warm.error is None and warm.seconds is not None
    assert [g["1"]["inputs"]["color"] for g in fake.graphs] == [4242]  # WARMUP_PARAMS applied
    # ComfyUI restarted (another process): not warm until warmed again.
    assert warm.warming(202) and not warm.wait(202, timeout_s=0)
    warm.run(client(fake), 202)
    assert warm.wait(202, timeout_s=0) and not warm.warming(202)


def test_a_failed_warmup_is_reported_and_jobs_go_on(registry: Registry) -> None:
    warm = warmup(registry)
    warm.run(client(FakeComfy(fail=True)), 7)
    assert warm.state == "failed"
    assert warm.error is not None and "out of memory" in warm.error
    assert warm.wait(7, timeout_s=0)


def test_without_a_warmup_nothing_waits(registry: Registry) -> None:
    fake, warm = FakeComfy(), warmup(registry, None)
    warm.run(client(fake), 1)
    assert fake.graphs == [] and warm.wait(99, timeout_s=0) and not warm.warming(99)


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
        Warmup(registry, workflow, params, lambda _: [], 60)
