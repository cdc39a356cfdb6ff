"""Per-tenant request rate: a token bucket in Redis (one hash per tenant), shared by every API process.

The bucket holds up to TENANT_RATE_BURST tokens and refills at TENANT_RATE_PER_S; each request takes one,
in one Lua call (read, refill, take, write together), or is refused with 429 `rate_limited` and a
Retry-After of when the next token comes. The clock is the API process's (they agree to well under a
token's time on one deployment); the hash expires once it would be full again.
"""

from __future__ import annotations

import time

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.errors import QueueUnavailableError, RateLimitedError

# KEYS[1] bucket; ARGV[1] now (s), [2] rate (tokens/s), [3] burst → {taken (1/0), wait_ms}
_TAKE = """
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate) end
local taken, wait_ms = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {taken, wait_ms}
"""


class RateLimiter:
    def __init__(self, client: aioredis.Redis, rate_per_s: float, burst: int | None) -> None:
        self._redis = client
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1, int(rate_per_s * 2))
        self._take = client.register_script(_TAKE)

    async def take(self, tenant: str) -> None:
        """Takes one of the tenant's tokens, or raises RateLimitedError (no limit: returns at once)."""
        if self.rate_per_s <= 0:
            return
        try:
            taken, wait_ms = await self._take(
                keys=[keys.rate_bucket(tenant)], args=[time.time(), self.rate_per_s, self.burst]
            )
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
        if not int(taken):
            raise RateLimitedError(
                f"tenant {tenant!r} is over TENANT_RATE_PER_S ({self.rate_per_s:g} requests a second, "
                f"bursts of {self.burst}); try again shortly",
                retry_after_s=int(wait_ms) / 1000,
            )
