"""The model files a graph loads, for model affinity."""

from __future__ import annotations

import json

from comfyjobs.graphs.models import models_of
from tests.conftest import REPO


def test_the_model_files_of_a_graph() -> None:
    graph = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    graph["4"]["inputs"]["ckpt_name"] = "sd15.safetensors"
    graph["10"]["inputs"]["lora_name"] = "Style.SAFETENSORS"

    assert models_of(graph) == ["Style.SAFETENSORS", "sd15.safetensors"]
    assert models_of(json.loads((REPO / "workflows" / "tiny.json").read_text())) == []
