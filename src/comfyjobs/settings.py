"""One validated settings object per process, read from the environment and `.env`.

Built once at process start (``Settings.load()``) and passed down; nothing else reads the environment.
Invalid values stop the process before it touches Redis or ComfyUI.
"""

from __future__ import annotations

import base64
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyjobs.errors import ConfigError
from comfyjobs.tenancy import Principal, parse_keys


def comma_list(text: str) -> list[str]:
    """A comma-separated setting's entries, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- Queue and records -------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis for the queue and job records. Unset: `comfyjobs up` starts a private one.",
    )
    job_ttl_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    job_time_limit_s: Annotated[float, Field(gt=0)] = 1800.0
    queue_name: str = "comfyjobs"
    max_queue_depth: Annotated[int, Field(ge=0)] = 1000
    max_attempts: Annotated[int, Field(ge=1)] = 3
    api_redis_connections: Annotated[int, Field(ge=2, le=10_000)] = Field(
        default=64,
        description="Redis connections one API process opens at most; past it requests wait their turn.",
    )
    tenant_max_queued: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Most jobs one tenant may have waiting (429 tenant_queue_full); 0: no limit."
    )
    tenant_max_priority: Annotated[int, Field(ge=0, le=9)] = Field(
        default=9, description="Highest job priority (0-9) a tenant's key may ask for; admin keys: any."
    )
    tenant_rate_per_s: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="Requests per second per tenant, shared by every API process; 0: no limit."
    )
    tenant_rate_burst: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Requests a tenant may send at once; default: two seconds' worth."
    )
    affinity_max_skip: Annotated[int, Field(ge=0, le=100)] = Field(
        default=4,
        description="Model affinity: a worker may take a waiting job that uses the models its ComfyUI has "
        "loaded ahead of this many others of the same priority (each overtaken job counts); 0: off.",
    )
    affinity_max_wait_s: Annotated[float, Field(ge=0)] = Field(
        default=60.0, description="Model affinity: a job waiting this long is not overtaken any more."
    )
    job_lease_s: Annotated[float, Field(ge=1)] = 30.0
    reconcile_interval_s: Annotated[float, Field(gt=0)] = 10.0

    # --- Files -------------------------------------------------------------------------------------
    data_dir: Path = Path("data")
    model_dir: Path = Path("models")
    manifest_dir: Path = Path("manifests")
    workflow_dir: Path = Path("workflows")
    catalog_keep: Annotated[int, Field(ge=2, le=1000)] = Field(
        default=10,
        description="Catalog versions kept per queue (the most recently published or activated), besides "
        "the active one and any a job that has not ended was built from.",
    )

    # --- Storage: outputs and input assets ------------------------------------------------------------
    storage_backend: Literal["local", "s3"] = Field(
        default="local",
        description="`local`: files under DATA_DIR (API and workers on one machine); `s3`: an S3-compatible "
        "bucket, the only thing besides Redis that the API and the workers share.",
    )
    s3_bucket: str | None = None
    s3_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="For R2, MinIO, GCS interop...; unset: AWS (from S3_REGION)."
    )
    s3_region: str | None = None
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket, e.g. `comfyjobs/`.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_access_key_id: str | None = Field(
        default=None, description="With S3_SECRET_ACCESS_KEY; unset: the standard AWS chain (AWS_*, a role)."
    )
    s3_secret_access_key: SecretStr | None = None
    url_ttl_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = Field(
        default=3600, description="Output and asset links expire after this (S3 presigning allows 7 days)."
    )
    url_signing_key: SecretStr | None = Field(
        default=None,
        description="Key for signing local output/asset links; unset: one is made and kept in DATA_DIR. "
        "Every API process serving the same DATA_DIR must use the same key.",
    )
    output_ttl_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    asset_ttl_s: Annotated[int, Field(ge=60)] = 24 * 3600
    retention_interval_s: Annotated[float, Field(gt=0)] = 60.0

    # --- Input media ------------------------------------------------------------------------------
    input_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    input_max_pixels: Annotated[int, Field(ge=64)] = 40_000_000
    input_url_allowlist: str = Field(
        default="",
        description="Comma-separated hosts or CIDRs that URL inputs may reach although they are not public "
        "(loopback, private, link-local...).",
    )
    input_url_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    # --- Webhooks (Standard Webhooks: signed, at least once, durable in Redis) ----------------------
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="`whsec_` + base64 key that signs every delivery; unset, a `webhook_url` is refused.",
    )
    webhook_max_attempts: Annotated[int, Field(ge=1, le=30)] = 8
    webhook_retry_base_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Wait before the 2nd attempt; each later wait is 4 times the one before (5 s base, 8 "
        "attempts: the last one about 7.6 hours after the first).",
    )
    webhook_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    webhook_url_allowlist: str = Field(
        default="",
        description="As INPUT_URL_ALLOWLIST, for webhook targets: hosts or CIDRs they may reach although "
        "not public.",
    )

    # --- Raw graphs (the Comfy API v2 at /api/v2) -----------------------------------------------------
    raw_workflows: bool = Field(
        default=True,
        description="Accept API-format graphs as they are (POST /api/v2/jobs). A raw graph can use any node "
        "class installed in the workers' ComfyUI, as ComfyUI itself allows; false refuses them all.",
    )
    raw_workflow_node_denylist: str = Field(
        default="", description="Comma-separated node class names a raw graph may not use."
    )
    raw_workflow_node_allowlist: str = Field(
        default="",
        description="Comma-separated node class names: when set, a raw graph may use only these.",
    )

    # --- API ---------------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="Base of output and status URLs as clients reach the API; default: http://API_HOST:API_PORT",
    )
    sse_heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated `tenant:key` pairs (a bare key: tenant `default`); set, every route "
        "but /health, /ready, the docs and signed links needs one. A tenant sees only its own tasks.",
    )
    admin_api_keys: SecretStr | None = Field(
        default=None, description="As API_KEYS; an admin key sees every tenant's tasks."
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1024 * 1024, description="Largest request body (but POST /assets); larger answers 413."
    )
    max_upload_bytes: Annotated[int, Field(ge=1024)] | None = Field(
        default=None, description="Largest POST /assets body; default: INPUT_MAX_BYTES + 1 MiB."
    )
    api_body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0, description="Longest wait for the next piece of a request body; then 408."
    )
    api_header_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=10.0, description="Time for a request's headers, and for a new connection's first request."
    )
    api_keep_alive_s: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5, description="An idle keep-alive connection is closed after this."
    )
    api_max_connections: Annotated[int, Field(ge=1)] = Field(
        default=2048, description="Open connections beyond this are answered 503 and closed."
    )
    api_max_header_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=16 * 1024, description="Largest request line plus headers; larger answers 400."
    )

    # --- ComfyUI -----------------------------------------------------------------------------------
    comfyui_dir: Path = Path("ComfyUI")
    comfyui_python: Path | None = Field(default=None, description="Python for ComfyUI; default: ours.")
    comfyui_base_port: Annotated[int, Field(ge=1024, le=65000)] = 8188
    comfyui_extra_args: str = ""
    comfyui_start_timeout_s: Annotated[float, Field(gt=0)] = 180.0
    comfyui_stop_timeout_s: Annotated[float, Field(gt=0)] = 15.0
    comfyui_hang_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    restart_backoff_max_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Longest wait before `comfyjobs up` restarts a crashed API, worker or Redis (and a "
        "worker its ComfyUI): waits grow 1, 2, 5, 10, 30 s, none above this.",
    )
    comfyui_preview_method: Literal["none", "auto", "latent2rgb", "taesd"] = Field(
        default="none",
        description="ComfyUI's --preview-method: anything but `none` sends in-progress frames as "
        "`preview` events on each task's event stream.",
    )

    # --- Model downloads ---------------------------------------------------------------------------
    hf_token: SecretStr | None = Field(
        default=None,
        description="Hugging Face token for gated/private models (sent only to huggingface.co; never "
        "logged).",
    )
    civitai_token: SecretStr | None = Field(
        default=None, description="Civitai API token for model URLs on civitai.com (never logged)."
    )
    model_url_allowlist: str = Field(
        default="huggingface.co,civitai.com",
        description="Hosts a model given as a URL may come from, comma-separated: a name (its sub-domains "
        "too), an IP or a CIDR. Its redirects may lead elsewhere, but never to a private address unless "
        "listed here.",
    )
    model_max_bytes: Annotated[int, Field(gt=0)] = Field(
        default=64 * 1024**3, description="Largest model file a URL may bring (bytes)."
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="The host's cache of models fetched on demand (default: DATA_DIR/model-cache); share "
        "it between the workers of one host so each file is downloaded once.",
    )
    model_cache_max_gb: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Cap of the model cache: past it the least recently used models no job uses go.",
    )
    models_shared_dir: Path | None = Field(
        default=None,
        description="A shared, read-only models tree (a NAS mount, same folder layout as MODEL_DIR) that "
        "each worker's ComfyUI also reads, through extra_model_paths.",
    )

    # --- Workers -----------------------------------------------------------------------------------
    worker_heartbeat_s: Annotated[float, Field(gt=0)] = 5.0
    worker_labels: str = Field(
        default="",
        description="This worker's labels, comma-separated (e.g. video,80gb): it runs a workflow whose "
        "manifest `requires: {labels: [...]}` only if it has all of them.",
    )
    worker_linger_s: Annotated[float, Field(ge=0)] = Field(
        default=2.0,
        description="How long a worker thread whose line ran empty waits for the next job itself (on "
        "Celery's list) before going back to Celery: a job sent to an idle worker starts a few ms sooner. "
        "0: back at once.",
    )
    warmup_workflow: str | None = Field(
        default=None,
        description="A workflow each worker runs on its ComfyUI after it starts (and after every restart) "
        "before taking jobs, so the first job does not pay for loading models.",
    )
    warmup_params: dict[str, Any] = Field(
        default_factory=dict, description='Its parameters, as JSON (e.g. {"steps": 1}); defaults otherwise.'
    )
    progress_interval_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=0.25,
        description="A running job's progress is written to its record at most this often (and at once "
        "when ComfyUI goes quiet, so it never lags). 0: every step and node.",
    )
    worker_task_events: bool = Field(
        default=False,
        description="Celery task events from the workers (for Flower's task views; one more Redis "
        "message per job).",
    )

    # --- Embedded Redis (only when redis_url is unset) ---------------------------------------------
    embedded_redis_port: Annotated[int, Field(ge=1024, le=65535)] = 6399

    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @property
    def model_cache_root(self) -> Path:
        return self.model_cache_dir if self.model_cache_dir is not None else self.data_dir / "model-cache"

    @property
    def model_cache_max_bytes(self) -> int | None:
        return None if self.model_cache_max_gb is None else int(self.model_cache_max_gb * 1024**3)

    @field_validator("input_url_allowlist", "webhook_url_allowlist", "model_url_allowlist")
    @classmethod
    def _allowlist_parses(cls, value: str) -> str:
        from comfyjobs.media.url_policy import UrlPolicy  # the one parser of these entries

        UrlPolicy(comma_list(value))  # ValueError names the entry
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_usable(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return value and ""  # blank: as unset (`up` starts its own Redis; `api` and `worker` refuse)
        problem = redis_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _api_keys_name_a_key(self) -> Settings:
        _ = self.principals  # every entry parses (tenant names, no repeats), or ValueError says which
        # Set but blank (" , ", or a secret that never got filled in) would run the API open: refuse.
        if self.api_keys is not None and not any(
            entry.strip() for entry in self.api_keys.get_secret_value().split(",")
        ):
            raise ValueError("API_KEYS is set but names no key (leave it unset to run without keys)")
        return self

    @model_validator(mode="after")
    def _storage_complete(self) -> Settings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together: set both or neither")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        return self

    @property
    def public_base_url(self) -> str:
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def accepted_api_keys(self) -> frozenset[str]:
        return frozenset(self.principals)

    @property
    def principals(self) -> dict[str, Principal]:
        """Every key (user and admin) → who it acts for; empty: no keys, an open service."""
        found: dict[str, Principal] = {}
        for setting, secret, admin in (
            ("API_KEYS", self.api_keys, False),
            ("ADMIN_API_KEYS", self.admin_api_keys, True),
        ):
            if secret is not None:
                for key, principal in parse_keys(
                    secret.get_secret_value(), admin=admin, setting=setting
                ).items():
                    if key in found:
                        raise ValueError(f"{setting}: a key is also in API_KEYS")
                    found[key] = principal
        return found

    @property
    def objects_dir(self) -> Path:
        """Root of the `local` storage backend (outputs/ and inputs/ under it)."""
        return self.data_dir

    @property
    def raw_node_denylist(self) -> frozenset[str]:
        return frozenset(comma_list(self.raw_workflow_node_denylist))

    @property
    def raw_node_allowlist(self) -> frozenset[str] | None:
        """None: every installed class (less the denylist)."""
        names = frozenset(comma_list(self.raw_workflow_node_allowlist))
        return names or None

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(comma_list(self.worker_labels))

    @property
    def url_allowlist(self) -> list[str]:
        return comma_list(self.input_url_allowlist)

    @property
    def webhook_allowlist(self) -> list[str]:
        return comma_list(self.webhook_url_allowlist)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_decodes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must start with whsec_ (then the key in base64)")
        try:
            key = base64.b64decode(raw.removeprefix("whsec_") + "==", validate=False)
        except ValueError:
            raise ValueError("the part after whsec_ is not base64") from None
        if len(key) < 16:
            raise ValueError("the key is too short: at least 16 bytes (24 base64 characters)")
        return value

    @property
    def comfy_instances_dir(self) -> Path:
        return self.data_dir / "comfyui"

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("REDIS_URL is not set (only `comfyjobs up` starts a Redis of its own)")
        return self.redis_url

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Reads the environment and `.env`; a bad value becomes a ConfigError naming the variable."""
        env_files = overrides.get("_env_file", cls.model_config.get("env_file"))
        encoding = overrides.get("_env_file_encoding", cls.model_config.get("env_file_encoding"))
        problems = unknown_names(
            setting_names(), _env_file_paths(env_files), os.environ, encoding=encoding or None
        )
        try:
            settings = cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems += [
                (f"{'.'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "")
                + str(err["msg"]).removeprefix("Value error, ")
                for err in exc.errors()
            ]
            raise ConfigError(f"invalid settings: {'; '.join(problems)}") from exc
        if problems:
            raise ConfigError(f"invalid settings: {'; '.join(problems)}")
        return settings


# --- Fail fast on names that are not settings ---------------------------------------------------------
# A `.env` file is ours entirely: every key in it must be a setting. The environment holds everything
# else too, so only names that look like ours are checked there: a near miss of a setting's name, or a
# name under the prefix of one of our settings' groups (COMFYUI_, S3_, API_, REDIS_...). Prefixes that
# other tools use as well are left to the near-miss rule: HF_ (huggingface_hub: HF_HOME), MAX_ (MAX_JOBS,
# for extension builds), JOB_ (Jenkins: JOB_NAME; Kubernetes: JOB_COMPLETION_INDEX) and the generic
# DATA_, MODEL_, LOG_, PUBLIC_. Names under another tool's own prefix are never checked: AWS_ is boto3's
# (AWS_ENDPOINT_URL is as near to S3_ENDPOINT_URL as a typo, and means the same to boto3).
SHARED_PREFIXES = frozenset({"HF", "MAX", "JOB", "DATA", "MODEL", "LOG", "PUBLIC"})
FOREIGN_PREFIXES = frozenset({"AWS"})
NEAR_MISS_RATIO = 0.85
# Kubernetes gives every pod <SERVICE>_SERVICE_HOST, <SERVICE>_PORT=tcp://... and kin for each service
# (a service named `redis` makes REDIS_PORT): never ours.
_SERVICE_LINK = re.compile(r"_SERVICE_(HOST|PORT(_\w+)?)$|_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$")
_SERVICE_LINK_PORT = re.compile(r"(tcp|udp|sctp)://", re.IGNORECASE)


def setting_names() -> frozenset[str]:
    """Every name a setting is read under, upper case (pydantic-settings ignores case)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        if isinstance(field.alias, str):
            names.add(field.alias.upper())
        choices = getattr(field.validation_alias, "choices", [field.validation_alias])  # AliasChoices
        names.update(choice.upper() for choice in choices if isinstance(choice, str))
    return frozenset(names)


def redis_url_problem(url: str) -> str | None:
    """Why redis-py and Celery could not use ``url``, or None; never quotes it (it may hold a password)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "not a URL; expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///path/to/redis.sock"
    if scheme not in ("redis", "rediss", "unix"):
        return f"scheme {scheme[:20]!r} is not redis://, rediss:// or unix://"
    parts = urlsplit(url)
    if scheme == "unix":
        if parts.hostname or not parts.path:
            return "unix:// needs an absolute socket path, as in unix:///path/to/redis.sock"
        return None
    if not parts.hostname:
        return f"{scheme}:// names no host"
    try:
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError:
        port = 0
    if port == 0:
        return "the port is not a number in 1-65535"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "the database (the URL's path) must be a number, as in /0"
    return None


def _env_file_paths(env_files: object) -> list[Path]:
    if env_files is None:
        return []
    if isinstance(env_files, (str, os.PathLike)):
        env_files = [env_files]
    if not isinstance(env_files, Iterable):
        return []
    return [Path(f).expanduser() for f in env_files if isinstance(f, (str, os.PathLike))]


def _looks_like_ours(name: str, known: frozenset[str], prefixes: frozenset[str]) -> bool:
    prefix = name.partition("_")[0]
    if prefix in prefixes:
        return True
    if prefix in FOREIGN_PREFIXES:
        return False
    return any(difflib.SequenceMatcher(None, name, k).ratio() >= NEAR_MISS_RATIO for k in known)


def _is_service_link(name: str, value: str) -> bool:
    if _SERVICE_LINK.search(name):
        return True
    return name.endswith("_PORT") and bool(_SERVICE_LINK_PORT.match(value))


def unknown_names(
    known: frozenset[str],
    env_files: Iterable[Path],
    environ: Mapping[str, str],
    *,
    encoding: object = None,
) -> list[str]:
    """One problem per name that is not a setting: every key of the `.env` files, and the environment's
    names that look like ours. Each names the variable, where it came from and the closest setting."""
    problems: list[str] = []

    def refuse(name: str, where: str) -> None:
        upper = name.upper()
        group = sorted(k for k in known if k.partition("_")[0] == upper.partition("_")[0])
        # Within the name's own group first: REDIS_HOST means REDIS_URL more likely than API_HOST.
        guess = difflib.get_close_matches(upper, group, n=1) or difflib.get_close_matches(upper, known, n=1)
        hint = f"; did you mean {guess[0]}?" if guess else " (.env.example lists every setting)"
        problems.append(f"{name} ({where}): not a setting{hint}")

    for path in env_files:
        if path.is_file():  # not a FIFO, as pydantic-settings reads one: it can be read only once
            keys = dotenv_values(path, encoding=encoding if isinstance(encoding, str) else None)
            for key in keys:
                if key.upper() not in known:
                    refuse(key, f"in {path}")
    prefixes = frozenset(n.partition("_")[0] for n in known if "_" in n) - SHARED_PREFIXES
    for name in sorted(environ):
        upper = name.upper()
        if upper in known or _is_service_link(upper, environ[name]):
            continue
        if _looks_like_ours(upper, known, prefixes):
            refuse(name, "in the environment")
    return problems
