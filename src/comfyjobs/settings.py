"""One validated settings object per process, read from the environment and `.env`.

Built once at process start (``Settings.load()``) and passed down; nothing else reads the environment.
Invalid values stop the process before it touches Redis or ComfyUI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyjobs.errors import ConfigError


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
    job_lease_s: Annotated[float, Field(ge=1)] = 30.0
    reconcile_interval_s: Annotated[float, Field(gt=0)] = 10.0

    # --- Files -------------------------------------------------------------------------------------
    data_dir: Path = Path("data")
    model_dir: Path = Path("models")
    manifest_dir: Path = Path("manifests")
    workflow_dir: Path = Path("workflows")

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
        description="Comma-separated keys; set, every route but /health, /ready and the docs needs one.",
    )

    # --- ComfyUI -----------------------------------------------------------------------------------
    comfyui_dir: Path = Path("ComfyUI")
    comfyui_python: Path | None = Field(default=None, description="Python for ComfyUI; default: ours.")
    comfyui_base_port: Annotated[int, Field(ge=1024, le=65000)] = 8188
    comfyui_extra_args: str = ""
    comfyui_start_timeout_s: Annotated[float, Field(gt=0)] = 180.0
    comfyui_stop_timeout_s: Annotated[float, Field(gt=0)] = 15.0
    comfyui_hang_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    comfyui_preview_method: Literal["none", "auto", "latent2rgb", "taesd"] = Field(
        default="none",
        description="ComfyUI's --preview-method: anything but `none` sends in-progress frames as "
        "`preview` events on each task's event stream.",
    )

    # --- Model downloads ---------------------------------------------------------------------------
    hf_token: str | None = Field(default=None, description="Hugging Face token for gated/private models.")

    # --- Workers -----------------------------------------------------------------------------------
    worker_heartbeat_s: Annotated[float, Field(gt=0)] = 5.0

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

    @field_validator("input_url_allowlist")
    @classmethod
    def _allowlist_parses(cls, value: str) -> str:
        from comfyjobs.media.fetch import UrlPolicy  # the one parser of these entries

        UrlPolicy([item.strip() for item in value.split(",") if item.strip()])  # ValueError names the entry
        return value

    @model_validator(mode="after")
    def _storage_complete(self) -> Settings:
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
        if self.api_keys is None:
            return frozenset()
        return frozenset(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def objects_dir(self) -> Path:
        """Root of the `local` storage backend (outputs/, assets/ under it)."""
        return self.data_dir

    @property
    def url_allowlist(self) -> list[str]:
        return [item.strip() for item in self.input_url_allowlist.split(",") if item.strip()]

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
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                (f"{'.'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "")
                + str(err["msg"]).removeprefix("Value error, ")
                for err in exc.errors()
            )
            raise ConfigError(f"invalid settings: {problems}") from exc
