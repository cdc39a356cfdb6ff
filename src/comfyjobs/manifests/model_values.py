"""What a model value names (a `type: model` parameter's, a workflow's `models` list): a file name in
its folder, or a download (``ModelSource``: a URL and maybe its sha256), and the stable name a
downloaded file has in ComfyUI's folder. Pure values: the API builds graphs with these names, the
worker links the files under them (worker.on_demand), the host's cache keys them (provision.model_cache).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from comfyjobs.storage.models import MODEL_EXTENSIONS

ON_DEMAND = "on-demand"  # the sub-folder of each ComfyUI model folder where URL models are linked
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ModelSource:
    url: str
    sha256: str | None = None  # lower-case hex; when given, the file must hash to it

    @property
    def key(self) -> str:
        if self.sha256 is not None:
            return self.sha256
        return "url-" + hashlib.sha256(self.url.encode()).hexdigest()

    @property
    def name(self) -> str:
        """The file's name: the URL's last path segment, made safe (the cache key keeps it unique)."""
        last = unquote(urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1])
        return _SAFE_NAME.sub("_", last).strip("._") or "model"


class ModelRef(BaseModel):
    """A model parameter's value as an object: its URL, and the sha256 its bytes must have."""

    model_config = ConfigDict(extra="forbid", title="ModelUrl")

    url: str = Field(min_length=1, max_length=2048, description="http(s) URL of the model file.")
    sha256: str | None = Field(default=None, pattern=SHA256.pattern, description="Its sha256 (hex).")


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def source_of(value: Any) -> ModelSource | None:
    """The download a model value names (a URL, or ``{url, sha256}``); None: a file name in the folder."""
    if isinstance(value, ModelRef):
        value = value.model_dump()
    if isinstance(value, Mapping):
        sha = value.get("sha256")
        return ModelSource(str(value["url"]), sha.lower() if isinstance(sha, str) else None)
    if is_url(value):
        return ModelSource(str(value))
    return None


def linked_name(source: ModelSource) -> str:
    """The name a URL model has in ComfyUI's folder: stable for its content (or URL), with an extension
    ComfyUI lists (a URL such as civitai's /api/download/models/123 has none)."""
    name = source.name
    if PurePosixPath(name).suffix.lower() not in MODEL_EXTENSIONS:
        name += ".safetensors"
    return f"{ON_DEMAND}/{source.key[:16]}-{name}"


__all__ = ["ON_DEMAND", "ModelRef", "ModelSource", "is_url", "linked_name", "source_of"]
