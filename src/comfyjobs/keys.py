"""Every Redis key and channel the service uses, in one place."""

from __future__ import annotations

PREFIX = "comfyjobs"


def job(task_id: str) -> str:
    """Hash: the job record, the source of truth for a task's status (see jobs.record)."""
    return f"{PREFIX}:job:{task_id}"


def worker(worker_id: str) -> str:
    """String with a TTL: a worker's heartbeat (JSON), refreshed every WORKER_HEARTBEAT_S."""
    return f"{PREFIX}:worker:{worker_id}"


WORKER_PATTERN = f"{PREFIX}:worker:*"


def job_events(task_id: str) -> str:
    """Pub/sub channel: a message per change of the task's record."""
    return f"{PREFIX}:events:{task_id}"
