"""The Celery app for Celery's own tools, configured from Settings as the service is (REDIS_URL,
QUEUE_NAME): ``celery -A comfyjobs.jobs.flower flower`` (task views need WORKER_TASK_EVENTS=true on the
workers), ``celery -A comfyjobs.jobs.flower inspect active``. Celery carries tickets, not jobs: Flower
shows ``comfyjobs.take_job`` tasks, each a run of jobs taken one after another; the jobs themselves are at
GET /tasks and /metrics.
"""

from __future__ import annotations

from comfyjobs.jobs.delivery import make_celery
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings

settings = Settings.load()
app = make_celery(settings, load_registry(settings.manifest_dir, settings.workflow_dir))
