"""The fleet's metrics, kept in Redis, so that GET /metrics of any API process shows all of them.

Job counters are kept by the Lua scripts in the same step as what they count (jobs.scripts): submitted at
admission, finished at the final status, so they match the jobs exactly. Histograms (queue wait and run
time per workflow, execution time per node class) are observed by the workers at each job's end, in one
script. Webhook deliveries are counted by their own script (webhooks.deliveries). Worker gauges
(state, ComfyUI restarts, model loads, GPU memory) come from the heartbeats.

Each metric is a hash at ``keys.metric(name)``; a field is the JSON array of its label values, and for a
histogram the bucket's index (into ``buckets``; ``len(buckets)`` is +Inf) or "sum" after them.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from comfyjobs import keys

SUBMITTED = "comfyjobs_jobs_submitted"  # counter: workflow, tenant
FINISHED = "comfyjobs_jobs_finished"  # counter: workflow, tenant, status
WEBHOOK_DELIVERIES = "comfyjobs_webhook_deliveries"  # counter: result


@dataclass(frozen=True)
class Histogram:
    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]  # upper bounds, ascending

    def observation(self, labels: tuple[str, ...], value: float) -> list[str | float]:
        """One observation, as what a script adds to (jobs.scripts ``RECORD_TIMES``): the metric's key, the
        field of its bucket (counted once), the field of its sum (``value`` added)."""
        bucket = bisect_left(self.buckets, value)
        return [keys.metric(self.name), json.dumps([*labels, bucket]), json.dumps([*labels, "sum"]), value]


QUEUE_WAIT = Histogram(
    "comfyjobs_queue_wait_seconds",
    "From acceptance to a worker starting the job (first attempts)",
    ("workflow",),
    (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
RUN_TIME = Histogram(
    "comfyjobs_run_seconds",
    "A successful job's time in ComfyUI, from its prompt's start to its end",
    ("workflow",),
    (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
NODE_TIME = Histogram(
    "comfyjobs_node_seconds",
    "Execution time of one node in ComfyUI (nodes served from its cache are not counted)",
    ("node_class",),
    (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
HISTOGRAMS = (QUEUE_WAIT, RUN_TIME, NODE_TIME)


def label_values(field: bytes | str) -> list[Any]:
    """A hash field's label values (and, for a histogram, its bucket index or "sum")."""
    values = json.loads(field)
    return values if isinstance(values, list) else [values]
