"""Assembles the FastAPI app: services in the lifespan, error handlers, one router per resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI

from comfyjobs import __version__
from comfyjobs.api.auth import require_api_key
from comfyjobs.api.availability import FleetView
from comfyjobs.api.catalog import CatalogView
from comfyjobs.api.errors import install_error_handlers
from comfyjobs.api.eta import Estimator
from comfyjobs.api.limits import install_limits
from comfyjobs.api.model_catalog import DiskModels, ModelCatalog, ReportedModels
from comfyjobs.api.quotas import RateLimiter
from comfyjobs.api.routes import assets, files, generate, health, loras, metrics, tasks, ui, workflows
from comfyjobs.api.services import Services
from comfyjobs.api.task_feed import TaskFeed
from comfyjobs.api.v2 import assets as v2_assets
from comfyjobs.api.v2 import job_events as v2_job_events
from comfyjobs.api.v2 import jobs as v2_jobs
from comfyjobs.api.v2.graphs import GraphIntake, Policy
from comfyjobs.api.views import Links, TaskView
from comfyjobs.backoff import exponential
from comfyjobs.catalog.publishing import ensure_active
from comfyjobs.catalog.registries import Versioned
from comfyjobs.catalog.store import AsyncCatalogReads, opened
from comfyjobs.jobs.changes import LISTEN_S, ChangeHub
from comfyjobs.jobs.delivery import JobMessages, make_celery
from comfyjobs.jobs.reconciler import Reconciler
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.media.resolve import MediaLimits, MediaResolver
from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.settings import Settings
from comfyjobs.storage.assets import AssetRecords
from comfyjobs.storage.objects import ObjectStore, open_object_store
from comfyjobs.storage.retention import RetentionSweeper
from comfyjobs.tenancy import DEFAULT_TENANT
from comfyjobs.webhooks.deliveries import Deliveries
from comfyjobs.webhooks.dispatcher import WebhookDispatcher

log = logging.getLogger(__name__)

RECONCILER_STOP_TIMEOUT_S = 15.0
REDIS_TIMEOUT_S = 5.0  # a hung Redis fails a request with 503 rather than holding it
REDIS_WAIT_MARGIN_S = 10.0  # a subscriber's read ends at its deadline; the socket may wait this much more


def _active_catalog(settings: Settings, redis_url: str) -> Versioned:
    """The active catalog version's registry; none active yet: this machine's folders, published and
    activated (ManifestError unless they pass `comfyjobs check`). Blocking: run once, at start."""
    with opened(redis_url, settings.queue_name, REDIS_TIMEOUT_S) as store:
        version = ensure_active(store, settings)
        return Versioned(version, store.bundle(version).registry())


def create_app(settings: Settings) -> FastAPI:
    """Fails fast: a missing REDIS_URL raises here, before the server binds; the catalog is read (or this
    machine's published, if none is active) as the app starts (bad manifests stop it then)."""
    redis_url = settings.require_redis_url()
    objects: ObjectStore = open_object_store(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        initial = await asyncio.to_thread(_active_catalog, settings, redis_url)
        # A bounded pool: past API_REDIS_CONNECTIONS a request waits (up to REDIS_TIMEOUT_S) for a
        # connection instead of failing. Streams and long polls hold none while they wait (ChangeHub).
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=settings.api_redis_connections,
            timeout=REDIS_TIMEOUT_S,
            health_check_interval=30,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        client = aioredis.Redis(connection_pool=pool)
        # The change subscriber's connection: its reads last up to LISTEN_S.
        subscriber = aioredis.Redis.from_url(
            redis_url, health_check_interval=30, socket_timeout=LISTEN_S + REDIS_WAIT_MARGIN_S
        )
        hub = ChangeHub(subscriber)
        hub.start()
        catalog = CatalogView(
            AsyncCatalogReads(client, settings.queue_name),
            subscriber,
            settings.queue_name,
            initial,
            on_switch=typed_routes.install,
        )
        typed_routes.install(initial)
        catalog.start()
        messages = JobMessages(make_celery(settings, initial.registry), settings.queue_name)
        store = AsyncJobStore(client, settings.job_ttl_s, settings.queue_name, messages, hub)
        links = Links(objects, settings.url_ttl_s)
        tenants = {DEFAULT_TENANT, *(p.tenant for p in settings.principals.values())}
        assets = AssetRecords(client, settings.asset_ttl_s, tenants)
        limits = MediaLimits(
            max_bytes=settings.input_max_bytes,
            max_pixels=settings.input_max_pixels,
            url_timeout_s=settings.input_url_timeout_s,
            url_policy=UrlPolicy(settings.url_allowlist),
            hold_s=settings.job_ttl_s,
        )
        fleet = FleetView(client)
        models: ModelCatalog = (
            DiskModels(settings.model_dir) if objects.backend == "local" else ReportedModels(fleet)
        )
        app.state.services = Services(
            settings=settings,
            catalog=catalog,
            redis=client,
            fleet=fleet,
            store=store,
            feed=TaskFeed(store, links, settings.sse_heartbeat_s, Estimator(store, fleet), fleet),
            objects=objects,
            links=links,
            assets=assets,
            media=MediaResolver(assets, objects, limits),
            models=models,
            rate=RateLimiter(client, settings.tenant_rate_per_s, settings.tenant_rate_burst),
            graphs=GraphIntake(
                client,
                fleet,
                assets,
                Policy(settings.raw_workflows, settings.raw_node_allowlist, settings.raw_node_denylist),
                hold_s=settings.job_ttl_s,
            ),
            webhook_policy=UrlPolicy(settings.webhook_allowlist, setting="WEBHOOK_URL_ALLOWLIST"),
            model_urls=ModelUrls.from_settings(settings),
        )
        reconciler = Reconciler(client, store, settings.queue_name, settings.reconcile_interval_s)
        sweeper = RetentionSweeper(client, objects, settings.retention_interval_s)
        loops: list[Reconciler | RetentionSweeper | WebhookDispatcher] = [reconciler, sweeper]
        if settings.webhook_secret is not None:
            loops.append(
                WebhookDispatcher(
                    Deliveries(client),
                    hub,
                    lambda record: TaskView.from_record(record, links).model_dump(mode="json"),
                    secret=settings.webhook_secret.get_secret_value(),
                    policy=app.state.services.webhook_policy,
                    delays_s=exponential(settings.webhook_retry_base_s, 4, settings.webhook_max_attempts - 1),
                    timeout_s=settings.webhook_timeout_s,
                )
            )
        background = [asyncio.create_task(loop.run_forever(), name=type(loop).__name__) for loop in loops]
        try:
            yield
        finally:
            # Background loops first: they must not start a Redis call on a client being closed. Each
            # ends its pass (Redis calls time out after REDIS_TIMEOUT_S); cancelled only if it does not.
            for loop in loops:
                loop.stop()
            for task in background:
                try:
                    await asyncio.wait_for(task, RECONCILER_STOP_TIMEOUT_S)
                except TimeoutError:
                    log.warning("%s did not stop in time; cancelled", task.get_name())
            await catalog.stop()
            await hub.stop()
            await subscriber.aclose()
            await client.aclose()
            await pool.aclose()

    app = FastAPI(
        title="comfyjobs",
        version=__version__,
        description="ComfyUI workflows as typed jobs: POST a job, follow GET /tasks/{task_id}.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    keyed = [Depends(require_api_key)]
    app.include_router(generate.router, dependencies=keyed)
    app.include_router(workflows.router, dependencies=keyed)
    typed_routes = workflows.TypedRoutes(app, keyed)  # installed from the catalog as the app starts
    app.include_router(tasks.router, dependencies=keyed)
    app.include_router(assets.router, dependencies=keyed)
    # Signed links (local backend): the signature is the credential, so a browser can fetch them.
    app.include_router(files.router)
    app.include_router(loras.router, dependencies=keyed)
    app.include_router(health.router)
    app.include_router(ui.router)  # static pages, open like /docs: their data comes with the caller's key
    app.include_router(metrics.router)  # open like /ready: scrapers are kept out at the network level
    # The Comfy API v2 (vendored spec: api/v2/openapi.yaml), on the same jobs, queue and assets.
    app.include_router(v2_jobs.router, dependencies=keyed)
    app.include_router(v2_job_events.router, dependencies=keyed)
    app.include_router(v2_assets.router, dependencies=keyed)
    install_limits(app, settings)  # keys and body limits before any byte of a body is read
    return app
