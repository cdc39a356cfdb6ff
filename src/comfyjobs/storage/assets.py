"""Assets: input files uploaded with POST /assets, or fetched from a URL or data: URL given as a media
parameter. An asset's id is the sha256 of its bytes: identical bytes are one asset and one stored object
(``inputs/<sha256>``). Its metadata lives in Redis for ASSET_TTL_S, renewed by each upload of the same
bytes and each job that uses it; the retention sweep deletes the object once that time has passed.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import redis
import redis.asyncio as aioredis
from blake3 import blake3
from pydantic import BaseModel

from comfyjobs import keys
from comfyjobs.errors import (
    AssetNotFoundError,
    HashMismatchError,
    PayloadTooLargeError,
    QueueUnavailableError,
)
from comfyjobs.media.probe import Kind, Probed, probe_file
from comfyjobs.storage.objects import ObjectStore, input_key
from comfyjobs.tenancy import Principal

ASSET_ID = re.compile(r"^[0-9a-f]{64}$")


class Asset(BaseModel):
    id: str  # the sha256 of the bytes, hex
    sha256: str
    blake3: str | None = None  # hex; the v2 API's content hash (None: recorded before it was kept)
    tenant: str
    kind: Kind
    content_type: str
    extension: str
    size_bytes: int
    width: int | None = None
    height: int | None = None
    filename: str | None = None
    created_at: datetime
    expires_at: datetime

    @property
    def key(self) -> str:
        return input_key(self.tenant, self.sha256)


class Ingested(BaseModel):
    """Bytes hashed, probed and stored; not yet recorded as an asset."""

    sha256: str
    blake3: str
    size_bytes: int
    probed: Probed
    filename: str | None


def _safe_filename(name: str | None) -> str | None:
    if not name:
        return None
    base = Path(name.replace("\\", "/")).name.strip()
    return base[:200] or None


def ingest_file(
    store: ObjectStore,
    source: Path,
    *,
    tenant: str,
    max_pixels: int,
    filename: str | None,
    expected_blake3: str | None = None,
) -> Ingested:
    """Blocking: hashes and probes ``source`` and stores it under its hash unless already there.
    ``source`` is consumed (moved or deleted). HashMismatchError, before anything is stored, when its
    blake3 (hex) is not ``expected_blake3``."""
    digest, content_hash = hashlib.sha256(), blake3()
    size = 0
    with source.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            content_hash.update(chunk)
            size += len(chunk)
    sha256 = digest.hexdigest()
    if expected_blake3 is not None and content_hash.hexdigest() != expected_blake3:
        raise HashMismatchError("the file's blake3 is not expected_hash; nothing was stored")
    name = _safe_filename(filename)
    probed = probe_file(source, max_pixels=max_pixels, filename=name)
    key = input_key(tenant, sha256)
    if store.exists(key):
        source.unlink(missing_ok=True)
    else:
        store.put_file(key, source, probed.content_type)
    return Ingested(
        sha256=sha256, blake3=content_hash.hexdigest(), size_bytes=size, probed=probed, filename=name
    )


def ingest_bytes(
    store: ObjectStore, data: bytes, *, tenant: str, max_pixels: int, filename: str | None
) -> Ingested:
    with tempfile.NamedTemporaryFile(delete=False, prefix="comfyjobs-input-") as fh:
        fh.write(data)
    try:
        return ingest_file(store, Path(fh.name), tenant=tenant, max_pixels=max_pixels, filename=filename)
    finally:
        Path(fh.name).unlink(missing_ok=True)  # refused, or a store that copied rather than moved


def spool(stream: BinaryIO, max_bytes: int) -> Path:
    """Copies an upload to a temporary file, refusing it past ``max_bytes`` (413)."""
    with tempfile.NamedTemporaryFile(delete=False, prefix="comfyjobs-upload-") as out:
        path = Path(out.name)
        try:
            copied = 0
            while chunk := stream.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise PayloadTooLargeError(f"the file is over INPUT_MAX_BYTES ({max_bytes} bytes)")
                out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return path


def _translate(exc: redis.RedisError) -> QueueUnavailableError:
    return QueueUnavailableError(f"Redis is unavailable: {exc}")


class AssetRecords:
    """Asset metadata in Redis, for the API (asyncio)."""

    def __init__(self, client: aioredis.Redis, ttl_s: int, tenants: Iterable[str] = ()) -> None:
        self._redis = client
        self.ttl_s = ttl_s
        self._tenants = sorted(set(tenants))  # every configured tenant: where an admin looks

    async def record(self, ingested: Ingested, tenant: str) -> Asset:
        """Records the asset (or renews it: same bytes, same asset) for another ASSET_TTL_S."""
        asset, _ = await self.record_new(ingested, tenant)
        return asset

    async def record_new(self, ingested: Ingested, tenant: str) -> tuple[Asset, bool]:
        """``record``, and whether the tenant had no asset of these bytes before."""
        now = datetime.now(UTC)
        existing = await self.get(ingested.sha256, tenant)
        probed = ingested.probed
        asset = Asset(
            id=ingested.sha256,
            sha256=ingested.sha256,
            blake3=ingested.blake3,
            tenant=tenant,
            kind=probed.kind,
            content_type=probed.content_type,
            extension=probed.extension,
            size_bytes=ingested.size_bytes,
            width=probed.width,
            height=probed.height,
            filename=existing.filename if existing and existing.filename else ingested.filename,
            created_at=existing.created_at if existing else now,
            expires_at=now + timedelta(seconds=self.ttl_s),
        )
        await self._save(asset)
        return asset, existing is None

    async def _save(self, asset: Asset) -> None:
        ttl_s = max(1, int((asset.expires_at - datetime.now(UTC)).total_seconds()))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(keys.asset(asset.tenant, asset.id), asset.model_dump_json(), ex=ttl_s)
                if asset.blake3:
                    pipe.set(keys.asset_by_blake3(asset.tenant, asset.blake3), asset.id, ex=ttl_s)
                if asset.filename:
                    pipe.set(keys.asset_by_name(asset.tenant, asset.filename), asset.id, ex=ttl_s)
                # GT: a later expiry only; the object outlives its record by nothing.
                pipe.zadd(keys.OBJECT_EXPIRY, {asset.key: asset.expires_at.timestamp()}, gt=True)
                await pipe.execute()
        except redis.RedisError as exc:
            raise _translate(exc) from exc

    async def get(self, asset_id: str, tenant: str) -> Asset | None:
        if not ASSET_ID.match(asset_id):
            return None
        try:
            raw = await self._redis.get(keys.asset(tenant, asset_id))
        except redis.RedisError as exc:
            raise _translate(exc) from exc
        return Asset.model_validate_json(raw) if raw else None

    async def by_blake3(self, blake3_hex: str, tenant: str) -> Asset | None:
        """The tenant's asset with these bytes, by their blake3 (hex), if it has one."""
        return await self._by_index(keys.asset_by_blake3(tenant, blake3_hex), tenant)

    async def by_filename(self, filename: str, tenant: str) -> Asset | None:
        """The tenant's asset last uploaded under this file name, if any."""
        return await self._by_index(keys.asset_by_name(tenant, filename), tenant)

    async def _by_index(self, key: str, tenant: str) -> Asset | None:
        try:
            asset_id = await self._redis.get(key)
        except redis.RedisError as exc:
            raise _translate(exc) from exc
        if asset_id is None:
            return None
        return await self.get(asset_id.decode() if isinstance(asset_id, bytes) else asset_id, tenant)

    async def require(self, asset_id: str, tenant: str) -> Asset:
        """The tenant's asset; another tenant's answers as an unknown one does."""
        asset = await self.get(asset_id, tenant)
        if asset is None:
            raise AssetNotFoundError(
                f"no asset {asset_id[:80]!r} (unknown, deleted, or expired after ASSET_TTL_S)"
            )
        return asset

    async def visible(self, asset_id: str, caller: Principal) -> Asset:
        """The asset as ``caller`` sees it: a tenant only its own; an admin its own tenant's, else the
        first configured tenant's (by name) that holds these bytes."""
        if not caller.admin or not ASSET_ID.match(asset_id):
            return await self.require(asset_id, caller.tenant)
        order = [caller.tenant, *(t for t in self._tenants if t != caller.tenant)]
        try:
            found = await self._redis.mget([keys.asset(tenant, asset_id) for tenant in order])
        except redis.RedisError as exc:
            raise _translate(exc) from exc
        raw = next((value for value in found if value), None)
        if raw is None:
            return await self.require(asset_id, caller.tenant)  # says "no asset", as for anyone
        return Asset.model_validate_json(raw)

    async def touch(self, asset: Asset, hold_s: int = 0) -> Asset:
        """A job uses it: it stays for another ASSET_TTL_S, and at least ``hold_s`` (the job's own
        lifetime: a job waiting in the queue must find its input when a worker takes it)."""
        ttl_s = max(self.ttl_s, hold_s)
        renewed = asset.model_copy(update={"expires_at": datetime.now(UTC) + timedelta(seconds=ttl_s)})
        await self._save(renewed)
        return renewed

    async def forget(self, asset: Asset) -> None:
        """Removes the record and schedules the object for deletion now (DELETE /assets/{id})."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.asset(asset.tenant, asset.id))
                if asset.blake3:
                    pipe.delete(keys.asset_by_blake3(asset.tenant, asset.blake3))
                pipe.zadd(keys.OBJECT_EXPIRY, {asset.key: time.time()})
                await pipe.execute()
        except redis.RedisError as exc:
            raise _translate(exc) from exc
