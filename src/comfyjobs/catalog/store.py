"""The published catalog versions of a queue, in Redis (keys in comfyjobs.keys): publish, activate, list,
read and prune. Blocking (the CLI, the workers); the API reads through ``AsyncCatalogReads``.

A version is immutable once published. Activating one makes it the version new jobs are validated
against, announced in the same step on ``keys.catalog_activated``. Pruning keeps the CATALOG_KEEP most
recently published or activated versions, the active one, and every version a job that has not ended
was built from (``keys.catalog_jobs``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.catalog.bundle import Bundle, short
from comfyjobs.errors import CatalogError, NoActiveCatalogError, QueueUnavailableError

MIN_PREFIX = 4  # hex digits a version given by prefix must have

# KEYS[1] the bundle, [2] the active key, [3] the activation channel, [4] the versions set
# ARGV[1] version, [2] now (epoch s). 0 if the version is not published.
ACTIVATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""

# KEYS[1] the versions set, [2] the info hash, [3] the active key
# ARGV[1] CATALOG_KEEP, [2] the oldest admission time of a job still alive (now - JOB_TTL_S),
# [3] the bundle key prefix, [4] the catalog-jobs key prefix. Returns the versions deleted.
PRUNE = """
local active = redis.call('GET', KEYS[3])
local gone = {}
for i, version in ipairs(redis.call('ZREVRANGE', KEYS[1], tonumber(ARGV[1]), -1)) do
  local jobs = ARGV[4] .. version
  redis.call('ZREMRANGEBYSCORE', jobs, '-inf', '(' .. ARGV[2])
  if version ~= active and redis.call('ZCARD', jobs) == 0 then
    redis.call('DEL', ARGV[3] .. version)
    redis.call('ZREM', KEYS[1], version)
    redis.call('HDEL', KEYS[2], version)
    gone[#gone + 1] = version
  end
end
return gone
"""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    published_at: float  # epoch s, of its last publish or activation
    source: str  # where it was published from (host:folder)
    workflows: list[str]
    active: bool
    jobs: int  # jobs built from it that have not ended

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Published:
    version: str
    new: bool  # False: the same content was published before (its time is renewed)
    pruned: list[str]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@contextlib.contextmanager
def opened(redis_url: str, queue: str, timeout_s: float = 10.0) -> Iterator[CatalogStore]:
    """A store on a connection of its own, closed after the block: for a command, or a process's start."""
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        yield CatalogStore(client, queue)
    finally:
        client.close()


class CatalogStore:
    def __init__(self, client: redis.Redis, queue: str) -> None:
        self._redis = client
        self._queue = queue
        self._activate = client.register_script(ACTIVATE)
        self._prune = client.register_script(PRUNE)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc

    def publish(
        self, bundle: Bundle, *, source: str, keep: int, job_ttl_s: float, workflows: list[str]
    ) -> Published:
        """Stores ``bundle`` (once: a version never changes) and prunes what is past keeping."""
        version, raw, now = bundle.version, bundle.to_bytes(), time.time()
        info = json.dumps({"source": source, "workflows": workflows})
        q = self._queue
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.catalog_bundle(q, version), raw, nx=True)
            pipe.zadd(keys.catalog_versions(q), {version: now})
            pipe.hsetnx(keys.catalog_info(q), version, info)
            created, _, _ = self._call(pipe.execute)
        return Published(version=version, new=bool(created), pruned=self.prune(keep, job_ttl_s))

    def activate(self, version: str) -> None:
        q = self._queue
        found = self._call(
            self._activate,
            keys=[
                keys.catalog_bundle(q, version),
                keys.catalog_active(q),
                keys.catalog_activated(q),
                keys.catalog_versions(q),
            ],
            args=[version, time.time()],
        )
        if not found:
            raise CatalogError(f"catalog version {short(version)} is not published on queue {q!r}")

    def prune(self, keep: int, job_ttl_s: float) -> list[str]:
        q = self._queue
        gone = self._call(
            self._prune,
            keys=[keys.catalog_versions(q), keys.catalog_info(q), keys.catalog_active(q)],
            args=[keep, time.time() - job_ttl_s, keys.catalog_bundle(q, ""), keys.catalog_jobs(q, "")],
        )
        return [str(_text(v)) for v in gone]

    def active(self) -> str | None:
        return _text(self._call(self._redis.get, keys.catalog_active(self._queue)))

    def require_active(self) -> str:
        version = self.active()
        if version is None:
            raise NoActiveCatalogError(
                f"no catalog is active on queue {self._queue!r}: run `comfyjobs catalog publish`"
            )
        return version

    def bundle(self, version: str) -> Bundle:
        raw = self._call(self._redis.get, keys.catalog_bundle(self._queue, version))
        if raw is None:
            raise CatalogError(f"catalog version {short(version)} is not published (or was pruned)")
        return Bundle.from_bytes(raw if isinstance(raw, bytes) else raw.encode(), version)

    def versions(self) -> list[VersionInfo]:
        """Newest first."""
        q = self._queue
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(keys.catalog_versions(q), 0, -1, withscores=True)
            pipe.hgetall(keys.catalog_info(q))
            pipe.get(keys.catalog_active(q))
            scored, info, active = self._call(pipe.execute)
        with self._redis.pipeline(transaction=False) as pipe:
            for version, _ in scored:
                pipe.zcard(keys.catalog_jobs(q, str(_text(version))))
            counts = self._call(pipe.execute)
        infos = {str(_text(k)): json.loads(v) for k, v in info.items()}
        out = []
        for (raw_version, score), jobs in zip(scored, counts, strict=True):
            version = str(_text(raw_version))
            meta = infos.get(version, {})
            out.append(
                VersionInfo(
                    version=version,
                    published_at=float(score),
                    source=str(meta.get("source", "")),
                    workflows=list(meta.get("workflows", [])),
                    active=version == _text(active),
                    jobs=int(jobs),
                )
            )
        return out

    def resolve(self, name: str) -> str:
        """A version named in full, by a unique prefix of at least MIN_PREFIX hex digits, or "active"."""
        if name == "active":
            return self.require_active()
        name = name.lower()
        if len(name) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in name):
            raise CatalogError(f"{name[:80]!r} is not a catalog version (at least {MIN_PREFIX} hex digits)")
        matches = [v.version for v in self.versions() if v.version.startswith(name)]
        if not matches:
            raise CatalogError(f"no published catalog version starts with {name!r}")
        if len(matches) > 1:
            listed = ", ".join(short(v) for v in matches)
            raise CatalogError(f"{name!r} names {len(matches)} versions ({listed}): give more digits")
        return matches[0]


class AsyncCatalogReads:
    """What the API reads of the catalog: the active version and a version's bundle."""

    def __init__(self, client: aioredis.Redis, queue: str) -> None:
        self._redis = client
        self._queue = queue

    async def active(self) -> str | None:
        try:
            return _text(await self._redis.get(keys.catalog_active(self._queue)))
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc

    async def bundle(self, version: str) -> Bundle:
        try:
            raw = await self._redis.get(keys.catalog_bundle(self._queue, version))
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
        if raw is None:
            raise CatalogError(f"catalog version {short(version)} is not published (or was pruned)")
        return Bundle.from_bytes(raw if isinstance(raw, bytes) else raw.encode(), version)
