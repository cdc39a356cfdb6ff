"""GET /metrics: the fleet's metrics in Prometheus' text format, the same from any API process.

Counters and histograms live in Redis (comfyjobs.metrics), kept by the scripts that change jobs and by
the workers; the workers' gauges (state, ComfyUI restarts, model loads, device memory) come from their
heartbeats. One scrape is one pipeline of HGETALLs plus the heartbeats: O(metric series), never a scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from comfyjobs import keys, metrics
from comfyjobs.api.services import Services, services
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.heartbeat import WorkerBeat

router = APIRouter(tags=["health"])

COUNTERS = (
    (metrics.SUBMITTED, "Jobs accepted", ("workflow", "tenant")),
    (metrics.FINISHED, "Jobs that reached a final status", ("workflow", "tenant", "status")),
    (metrics.WEBHOOK_DELIVERIES, "Webhook delivery attempts by result", ("result",)),
)
WORKER_STATES = ("starting", "warming", "ready")


class _Scrape:
    """A prometheus_client collector over the families read for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _counter(name: str, help_text: str, labels: tuple[str, ...], raw: dict[bytes, bytes]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=list(labels))
    for field, value in sorted(raw.items()):
        family.add_metric([_label(v) for v in metrics.label_values(field)], float(value))
    return family


def _histogram(spec: metrics.Histogram, raw: dict[bytes, bytes]) -> Metric:
    series: dict[tuple[str, ...], tuple[dict[int, float], list[float]]] = {}
    for field, value in raw.items():
        *labels, slot = metrics.label_values(field)
        counts, total = series.setdefault(tuple(_label(v) for v in labels), ({}, [0.0]))
        if slot == "sum":
            total[0] = float(value)
        else:
            counts[int(slot)] = float(value)
    family = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for label_set, (counts, total) in sorted(series.items()):
        cumulative, buckets = 0.0, []
        for index, bound in enumerate((*spec.buckets, float("inf"))):
            cumulative += counts.get(index, 0.0)
            buckets.append(("+Inf" if index == len(spec.buckets) else repr(float(bound)), cumulative))
        family.add_metric(list(label_set), buckets, sum_value=total[0])
    return family


def _workers(beats: list[WorkerBeat]) -> list[Metric]:
    states = GaugeMetricFamily("comfyjobs_workers", "Live workers by state", labels=["state"])
    for state in WORKER_STATES:
        states.add_metric([state], sum(b.state == state for b in beats))
    restarts = CounterMetricFamily(
        "comfyjobs_comfyui_restarts",
        "Restarts of a worker's ComfyUI since the worker started",
        labels=["worker"],
    )
    loads = CounterMetricFamily(
        "comfyjobs_model_loads", "Jobs that needed other models than the ones loaded", labels=["worker"]
    )
    device_labels = ["worker", "device", "type"]
    total = GaugeMetricFamily(
        "comfyjobs_gpu_memory_total_bytes",
        "A device's memory, per ComfyUI's /system_stats",
        labels=device_labels,
    )
    free = GaugeMetricFamily(
        "comfyjobs_gpu_memory_free_bytes", "A device's free memory", labels=device_labels
    )
    for beat in sorted(beats, key=lambda b: b.worker_id):
        restarts.add_metric([beat.worker_id], beat.comfyui_restarts)
        loads.add_metric([beat.worker_id], beat.model_loads)
        for device in beat.devices:
            total.add_metric([beat.worker_id, device.name, device.type], device.vram_total)
            free.add_metric([beat.worker_id, device.name, device.type], device.vram_free)
    return [states, restarts, loads, total, free]


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def scrape(svc: Annotated[Services, Depends(services)]) -> Response:
    """Jobs submitted and finished, queue depth, queue wait, run and node times, workers, webhooks."""
    names = [name for name, _, _ in COUNTERS] + [h.name for h in metrics.HISTOGRAMS]
    try:
        async with svc.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.metric(name))
            pipe.hgetall(keys.queue_prefix(svc.settings.queue_name) + "depths")
            *read, depths = await pipe.execute()
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
    by_name = dict(zip(names, read, strict=True))
    families: list[Metric] = [_counter(n, h, labels, by_name[n]) for n, h, labels in COUNTERS]
    families += [_histogram(h, by_name[h.name]) for h in metrics.HISTOGRAMS]
    depth = GaugeMetricFamily("comfyjobs_queue_depth", "Jobs waiting, by priority", labels=["priority"])
    for priority, count in sorted(depths.items(), key=lambda item: int(item[0])):
        depth.add_metric([priority.decode()], float(count))
    families.append(depth)
    families += _workers(await svc.fleet.beats())  # (read at most once a second per process)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
