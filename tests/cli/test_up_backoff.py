"""The restart rule per component of `comfyjobs up`: the API and the workers are restarted for ever,
Redis is given up on after REDIS_GIVE_UP_AFTER fast failures; RESTART_BACKOFF_MAX_S caps every wait."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from comfyjobs.cli.up import REDIS_GIVE_UP_AFTER, backoff
from comfyjobs.settings import Settings


def test_api_and_workers_never_given_up_redis_after_a_few() -> None:
    settings = cast(Settings, SimpleNamespace(restart_backoff_max_s=30.0))
    forever = backoff(settings)
    assert [forever.next_delay() for _ in range(7)] == [1.0, 2.0, 5.0, 10.0, 30.0, 30.0, 30.0]
    assert all(forever.next_delay() == 30.0 for _ in range(100))
    redis = backoff(settings, give_up_after=REDIS_GIVE_UP_AFTER)
    delays = [redis.next_delay() for _ in range(REDIS_GIVE_UP_AFTER)]
    assert delays[-1] is None and None not in delays[:-1]


def test_the_cap_shortens_every_wait() -> None:
    settings = cast(Settings, SimpleNamespace(restart_backoff_max_s=0.5))
    capped = backoff(settings)
    assert [capped.next_delay() for _ in range(6)] == [0.5] * 6
