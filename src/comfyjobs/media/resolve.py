"""Media parameters, resolved before a job is accepted: each value (an asset id, an http(s) URL or a
data: URL) becomes a stored, decoded, size-checked asset, or a 422 naming ``params.<name>`` and why.

URL and data: inputs become assets too (content-addressed, so the same picture sent twice is stored
once): the worker then only ever reads assets from the object store, never the network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from starlette.concurrency import run_in_threadpool

from comfyjobs.errors import (
    AssetNotFoundError,
    FieldProblem,
    InvalidParamsError,
    MediaError,
    PayloadTooLargeError,
)
from comfyjobs.jobs.record import InputRef
from comfyjobs.manifests.registry import Workflow
from comfyjobs.media.fetch import fetch_url
from comfyjobs.media.probe import require_kind
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.storage.assets import ASSET_ID, Asset, AssetRecords, ingest_bytes
from comfyjobs.storage.objects import ObjectStore


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int
    max_pixels: int
    url_timeout_s: float
    url_policy: UrlPolicy
    hold_s: int  # an input is kept at least this long after a job takes it (JOB_TTL_S)


@dataclass(frozen=True)
class ResolvedMedia:
    params: dict[str, Any]  # media values replaced by asset ids
    inputs: dict[str, InputRef]


def parse_data_url(value: str, max_bytes: int) -> tuple[bytes, str | None]:
    """(bytes, declared content type) of a ``data:[<type>][;base64],<data>`` URL."""
    header, sep, payload = value[len("data:") :].partition(",")
    if not sep:
        raise MediaError("a data: URL needs a ',' before its data")
    parts = header.split(";")
    declared = parts[0].strip() or None
    if "base64" in (p.strip().lower() for p in parts[1:]):
        if len(payload) * 3 // 4 > max_bytes + 3:
            raise PayloadTooLargeError(f"the data is over INPUT_MAX_BYTES ({max_bytes} bytes)")
        try:
            data = base64.b64decode("".join(unquote(payload).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"the data: URL is not valid base64: {exc}") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the data is over INPUT_MAX_BYTES ({max_bytes} bytes)")
    if not data:
        raise MediaError("the data: URL holds no data")
    return data, declared


class MediaResolver:
    def __init__(self, assets: AssetRecords, objects: ObjectStore, limits: MediaLimits) -> None:
        self._assets = assets
        self._objects = objects
        self._limits = limits

    async def resolve(self, workflow: Workflow, params: Mapping[str, Any], tenant: str) -> ResolvedMedia:
        """Media values → the tenant's assets (its own ids only; URL and data inputs become its assets)."""
        values = dict(params)
        inputs: dict[str, InputRef] = {}
        problems: list[FieldProblem] = []
        for param in workflow.media_parameters:
            value = values.get(param.name)
            if value is None:
                continue
            try:
                asset = await self._held(str(value), tenant)
                require_kind(asset.kind, param.type)
            except (MediaError, AssetNotFoundError) as exc:
                problems.append(FieldProblem(f"params.{param.name}", exc.message))
                continue
            values[param.name] = asset.id
            inputs[param.name] = InputRef(
                asset_id=asset.id,
                sha256=asset.sha256,
                key=asset.key,
                content_type=asset.content_type,
                extension=asset.extension,
            )
        if problems:
            raise InvalidParamsError(problems)
        return ResolvedMedia(params=values, inputs=inputs)

    async def _asset(self, value: str, tenant: str) -> Asset:
        lowered = value[:8].lower()
        limits = self._limits
        if lowered.startswith("data:"):
            data, _ = await run_in_threadpool(parse_data_url, value, limits.max_bytes)  # up to 64 MB
            filename = None
        elif lowered.startswith(("http://", "https://")):
            fetched = await run_in_threadpool(
                fetch_url,
                value,
                policy=limits.url_policy,
                max_bytes=limits.max_bytes,
                timeout_s=limits.url_timeout_s,
            )
            data, filename = fetched.data, fetched.filename
        elif ASSET_ID.match(value):
            return await self._assets.require(value, tenant)
        else:
            raise MediaError(
                "expected an asset id (from POST /assets), an http(s):// URL or a data: URL, "
                f"got {value[:40]!r}"
            )
        ingested = await run_in_threadpool(
            ingest_bytes, self._objects, data, tenant=tenant, max_pixels=limits.max_pixels, filename=filename
        )
        return await self._assets.record(ingested, tenant)

    async def _held(self, value: str, tenant: str) -> Asset:
        """The asset, kept at least as long as the job that uses it."""
        return await self._assets.touch(await self._asset(value, tenant), self._limits.hold_s)
