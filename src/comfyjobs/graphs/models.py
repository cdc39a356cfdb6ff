"""The model files an API-format graph loads: what a worker's ComfyUI keeps in memory between jobs, and
so what model affinity (jobs.queue) matches jobs to workers by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")


def models_of(graph: Mapping[str, Any]) -> list[str]:
    """Sorted, each once: every literal input value naming a model file (by its extension)."""
    found: set[str] = set()
    for node in graph.values():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for value in inputs.values():
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS):
                found.add(value)
    return sorted(found)
