"""Rolling verbs (update, restart): the hosts take turns in one order — the GPU hosts first, then the API
hosts — and the first host that fails, does not come back or cannot be reached stops the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from comfyjobs.fleet.hosts import FleetHost


def rolling_order(hosts: list[FleetHost]) -> list[FleetHost]:
    """GPU hosts (in inventory order), then the API hosts: the API last, so that it is updated once
    every worker already runs the new version."""
    return [h for h in hosts if "api" not in h.roles] + [h for h in hosts if "api" in h.roles]


@dataclass
class Rollout:
    """Which hosts are done, and where the update stopped (the first host that failed or was away)."""

    order: list[str]
    past: str = "updated"  # what a host that had its turn is ("updated", "restarted")
    done: dict[str, str] = field(default_factory=dict)  # host -> past / "unchanged"
    stopped_at: tuple[str, str] | None = None  # (host, why)

    def stop(self, host: str, why: str) -> None:
        if self.stopped_at is None:
            self.stopped_at = (host, why)


def rollout_summary(rollout: Rollout) -> str:
    parts = [f"{name}: {state}" for name, state in rollout.done.items()]
    if rollout.stopped_at is not None:
        host, why = rollout.stopped_at
        left = [n for n in rollout.order if n not in rollout.done and n != host]
        parts.append(f"stopped at {host} ({why})")
        if left:
            parts.append(f"not {rollout.past}: {', '.join(left)}")
    return "; ".join(parts)
