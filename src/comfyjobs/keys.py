"""Every Redis key and channel the service uses, in one place."""

from __future__ import annotations

import hashlib

PREFIX = "comfyjobs"


def job(task_id: str) -> str:
    """Hash: the job record, the source of truth for a task's status (see jobs.record)."""
    return f"{PREFIX}:job:{task_id}"


WORKERS = f"{PREFIX}:workers"
"""Hash: worker id → its latest heartbeat (JSON, with the time it stops counting); read whole, in
O(workers), by /ready, workflow availability and the model lists."""


def job_events(task_id: str) -> str:
    """Stream: one entry per applied change of the task's record (the first is the whole new record).

    A stream rather than a pub/sub channel: readers block on it (XREAD) like subscribers, but an entry
    published while nobody listened is still there, so an SSE client can resume with Last-Event-ID.
    Expires with the record."""
    return f"{PREFIX}:events:{task_id}"


def queue_waiting(queue: str) -> str:
    """Sorted set: the ids of jobs accepted on ``queue`` that no worker has taken yet, scored by the time
    they (last) entered the line: the queue's depth, and what the reconciler checks for lost tickets. The
    order of taking is the lanes' (``queue_prefix``), not this."""
    return f"{PREFIX}:queue:{queue}:waiting"


def queue_prefix(queue: str) -> str:
    """Prefix of the keys of ``queue``'s one order (see jobs.queue), which its Lua scripts complete:
    ``lane:<priority>:<tenant JSON>`` (sorted set: that tenant's waiting jobs at that priority, scored by
    sequence), ``turns:<priority>`` (list: tenants with waiting jobs there, in turn order) and ``depths``
    (hash: priority -> waiting jobs)."""
    return f"{PREFIX}:queue:{queue}:"


def queue_depths(queue: str) -> str:
    """Hash: priority -> jobs of ``queue`` waiting at that priority (kept by the queue's Lua scripts)."""
    return f"{queue_prefix(queue)}depths"


def catalog_jobs(queue: str, version: str) -> str:
    """Sorted set: the jobs of ``queue`` built from catalog ``version`` that have not ended (waiting or
    running), scored by their admission time (epoch s): kept by the admission and end scripts (whose Lua
    writes this key as ``queue_prefix .. 'catalog-jobs:' .. version``); a version with any is never
    pruned. Entries older than JOB_TTL_S are of expired records and trimmed by the prune."""
    return f"{queue_prefix(queue)}catalog-jobs:{version}"


def catalog_prefix(queue: str) -> str:
    return f"{PREFIX}:catalog:{queue}:"


def catalog_bundle(queue: str, version: str) -> str:
    """String: catalog ``version`` of ``queue`` (comfyjobs.catalog.bundle, JSON), whose sha256 is the
    version. Written once, never changed; deleted when pruned."""
    return f"{catalog_prefix(queue)}bundle:{version}"


def catalog_versions(queue: str) -> str:
    """Sorted set: the published catalog versions of ``queue``, scored by when last published (epoch s)."""
    return f"{catalog_prefix(queue)}versions"


def catalog_info(queue: str) -> str:
    """Hash: catalog version -> what `catalog list` shows of it (JSON: when and from where it was
    published, its workflows)."""
    return f"{catalog_prefix(queue)}info"


def catalog_active(queue: str) -> str:
    """String: the catalog version the API validates new jobs against (`catalog activate`)."""
    return f"{catalog_prefix(queue)}active"


def catalog_activated(queue: str) -> str:
    """Pub/sub channel: the version just activated, published in the step that activates it; every API
    process and worker subscribes, and reads ``catalog_active`` again whenever it (re)subscribes."""
    return f"{catalog_prefix(queue)}activated"


def queue_arrivals(queue: str) -> str:
    """Pub/sub channel: the class (``<workflow>@<catalog version>``) of each job put in line on ``queue``,
    published by the step that puts it there (the Lua writes it as ``queue_prefix .. 'arrivals'``). A
    worker whose job threads found only jobs they cannot run subscribes while they wait, to look again
    when one it can run arrives."""
    return f"{queue_prefix(queue)}arrivals"


def run_times(queue: str) -> str:
    """Hash: workflow id (and "*" for all) -> a moving average of its jobs' run time in seconds (JSON),
    written by workers as jobs succeed; the API's ETAs read it whole (O(workflows))."""
    return f"{PREFIX}:queue:{queue}:run-times"


def queue_seq(queue: str) -> str:
    """Counter: the sequence number of each job admitted to ``queue`` (its place within its lane)."""
    return f"{PREFIX}:queue:{queue}:seq"


def queue_waiting_by_tenant(queue: str) -> str:
    """Sorted set, all scores 0: ``<tenant JSON>|<task id>`` for each job waiting on ``queue``, kept by the
    same Lua calls as the waiting set; ZLEXCOUNT over a tenant's prefix is its waiting jobs
    (TENANT_MAX_QUEUED) in O(log n)."""
    return f"{PREFIX}:queue:{queue}:waiting-by-tenant"


def tenant_jobs(tenant: str) -> str:
    """Sorted set: a tenant's task ids scored by acceptance time (epoch s), newest last; entries older than
    JOB_TTL_S are trimmed by each admission. GET /api/v2/jobs pages through it, newest first."""
    return f"{PREFIX}:tenant-jobs:{tenant}"


def object_info(digest: str) -> str:
    """String: a worker's ComfyUI /object_info (JSON), keyed by the sha256 of that JSON; a worker's heartbeat
    names the digest it runs. Raw graphs (the v2 API) are validated against it before they are queued."""
    return f"{PREFIX}:object-info:{digest}"


def asset_by_blake3(tenant: str, blake3_hex: str) -> str:
    """String with the asset's TTL: a tenant's asset id (its sha256) by the blake3 of its bytes (the v2 API's
    content hash: HEAD /api/v2/assets/by-hash, POST /api/v2/assets/from-hash)."""
    return f"{PREFIX}:asset-blake3:{tenant}:{blake3_hex}"


def asset_by_name(tenant: str, filename: str) -> str:
    """String with the asset's TTL: a tenant's asset id by the file name it was last uploaded under, so a raw
    graph may name an upload as ComfyUI's own LoadImage would (the name is hashed into a bounded key)."""
    digest = hashlib.sha256(filename.encode()).hexdigest()
    return f"{PREFIX}:asset-name:{tenant}:{digest}"


def rate_bucket(tenant: str) -> str:
    """Hash with a TTL: a tenant's token bucket (TENANT_RATE_PER_S), shared by every API process."""
    return f"{PREFIX}:rate:{tenant}"


def queue_running(queue: str) -> str:
    """Sorted set: the ids of jobs a worker took (STARTED or PROGRESS), scored by start time; the
    reconciler looks here for jobs whose worker was lost."""
    return f"{PREFIX}:queue:{queue}:running"


LEASE_PREFIX = f"{PREFIX}:lease:"


def job_lease(task_id: str) -> str:
    """String with a short TTL: the worker running the job, renewed while it runs. Gone while the record
    says running means the worker was lost: the reconciler puts the job back in line."""
    return f"{LEASE_PREFIX}{task_id}"


def reconciler_leader(queue: str) -> str:
    """String with a TTL: the API process whose reconciler looks after ``queue`` now (one at a time,
    however many APIs serve it)."""
    return f"{PREFIX}:queue:{queue}:reconciler"


def queue_departures(queue: str) -> str:
    """Stream (capped): one entry per job leaving ``queue``'s waiting set, so jobs still waiting can
    tell, without polling, that their place in line moved."""
    return f"{PREFIX}:queue:{queue}:departures"


def idempotency(tenant: str, key: str) -> str:
    """String with the job's TTL: the task an Idempotency-Key header was first used for, and a hash of
    that request. The client's key is hashed so any header value makes a bounded, safe key."""
    digest = hashlib.sha256(f"{tenant}\n{key}".encode()).hexdigest()  # one tenant's key is not another's
    return f"{PREFIX}:idempotency:{digest}"


def job_previews(task_id: str) -> str:
    """Stream capped at one entry: the latest in-progress preview frame (JPEG bytes) of a running job.
    The SSE stream reads it beside the job's events; a client connecting mid-run gets the latest at
    once. Expires soon after the job (PREVIEW_TTL_S)."""
    return f"{PREFIX}:previews:{task_id}"


def asset(tenant: str, asset_id: str) -> str:
    """String with ASSET_TTL_S: a tenant's asset's metadata (JSON, see storage.assets). The id is the
    sha256 of the bytes, so identical bytes are one asset of that tenant, stored once."""
    return f"{PREFIX}:asset:{tenant}:{asset_id}"


OBJECT_EXPIRY = f"{PREFIX}:objects:expiry"
"""Sorted set: object keys or key prefixes (ending in "/") in the object store, scored by the epoch second
they expire; the retention sweep deletes what is due (O(due), never a listing of the bucket)."""


CHANGES_OF = f"{PREFIX}:changes:"


def changes_of(stream: str) -> str:
    """Pub/sub channel: each entry appended to ``stream`` (a task's events or previews, a queue's departures,
    WEBHOOKS_DUE) is announced on it, with the stream's name, in the same step as the append. An API
    process subscribes to it only while some reader there waits on the stream (jobs.changes), so it hears
    of its own readers' streams alone, however many jobs run."""
    return CHANGES_OF + stream


CHANGES = f"{PREFIX}:changes"
"""Pub/sub channel where versions before per-stream channels (``changes_of``) announced every append, by
the stream's name. The API's subscriber still listens: workers not yet upgraded wake its readers."""


WEBHOOKS_DUE = f"{PREFIX}:webhooks:due"
"""Sorted set: webhook delivery ids, scored by the epoch second their next attempt is due. A dispatcher
takes the due ones by moving them a visibility timeout ahead (so a delivery whose API process died is
taken again), and removes a delivery once it is done. Its changes: on ``changes_of(WEBHOOKS_DUE)``."""


def webhook(delivery_id: str) -> str:
    """Hash: one webhook delivery (its task, event type and time, the task as it was then, the body once
    rendered, attempts so far). Deleted when delivered or given up."""
    return f"{PREFIX}:webhook:{delivery_id}"


WEBHOOK_PREFIX = webhook("")


def metric(name: str) -> str:
    """Hash: one metric's values, one field per set of label values (JSON array) — counters and histogram
    buckets kept by the Lua scripts and the workers, so GET /metrics of any API process is the fleet's."""
    return f"{PREFIX}:metric:{name}"
