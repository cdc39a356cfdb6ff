"""The Celery app Flower imports (`celery -A comfyjobs.jobs.flower flower`) is the service's: same broker,
same queue, task events as WORKER_TASK_EVENTS says."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_celery_tools_get_the_services_app(redis_url: str) -> None:
    probe = (
        "from comfyjobs.jobs.flower import app; c = app.conf; "
        "print(c.broker_url == __import__('os').environ['REDIS_URL'], c.task_default_queue, "
        "c.worker_send_task_events)"
    )
    env = {"REDIS_URL": redis_url, "QUEUE_NAME": "flower-q", "WORKER_TASK_EVENTS": "true", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["True", "flower-q", "True"]
