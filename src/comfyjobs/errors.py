"""The one error hierarchy. Every error has a stable ``code`` that clients may branch on.

Foreign errors (redis, celery/kombu, requests, websocket) are translated into these at the module that
talks to the foreign system; HTTP statuses are assigned in one place, ``comfyjobs.api.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ComfyJobsError(Exception):
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class ConfigError(ComfyJobsError):
    code = "config_invalid"


class ApiV2Error(ComfyJobsError):
    """A refusal of the Comfy API v2 (/api/v2), with the spec's code, HTTP status and ``details``."""

    def __init__(
        self, message: str, *, code: str, status: int, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "details": self.details}


@dataclass(frozen=True)
class ManifestProblem:
    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class ManifestError(ComfyJobsError):
    """A manifest or workflow template is invalid. Carries every problem found, not just the first."""

    code = "manifest_invalid"

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        super().__init__("invalid manifests:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class FieldProblem:
    field: str
    reason: str


class InvalidParamsError(ComfyJobsError):
    code = "invalid_params"

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "fields": [{"field": p.field, "reason": p.reason} for p in self.problems],
        }


class AuthenticationError(ComfyJobsError):
    """API_KEYS is set and the request carried no key, or a wrong one."""

    code = "unauthorized"


class WorkflowNotFoundError(ComfyJobsError):
    code = "workflow_not_found"


class TaskNotFoundError(ComfyJobsError):
    code = "task_not_found"


class TaskFinishedError(ComfyJobsError):
    """The task already reached a final state (cancelling it is too late)."""

    code = "task_finished"


class TaskRunningError(ComfyJobsError):
    """The task has not finished yet (its outputs cannot be deleted)."""

    code = "task_running"


class QueueFullError(ComfyJobsError):
    """MAX_QUEUE_DEPTH jobs already wait; try again later (429 with Retry-After)."""

    code = "queue_full"


class TenantQueueFullError(QueueFullError):
    """The tenant already has TENANT_MAX_QUEUED jobs waiting (429 with Retry-After)."""

    code = "tenant_queue_full"


class RateLimitedError(ComfyJobsError):
    """The tenant sent more than TENANT_RATE_PER_S requests (429 with Retry-After)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IdempotencyConflictError(ComfyJobsError):
    """The Idempotency-Key was used before for a different request."""

    code = "idempotency_conflict"


class AssetNotFoundError(ComfyJobsError):
    code = "asset_not_found"


class MediaError(ComfyJobsError):
    """An input file is refused: it cannot be fetched (or may not be: SSRF policy), does not decode as
    its kind, or is too large. The message says why; callers name the field."""

    code = "invalid_media"


class BodyCutError(MediaError):
    """The connection failed while the body was being read (what came so far may be resumed)."""


class PayloadTooLargeError(MediaError):
    code = "payload_too_large"


class HashMismatchError(ComfyJobsError):
    """An upload's bytes are not the ones its client announced (``expected_hash``): nothing is stored."""

    code = "hash_mismatch"


class UrlSignatureError(ComfyJobsError):
    """A signed output or asset link is expired, tampered with, or unsigned (403)."""

    code = "url_signature_invalid"


class StorageError(ComfyJobsError):
    """The object store (local folder or S3 bucket) failed; nothing was half-written."""

    code = "storage_unavailable"


class ObjectNotFoundError(StorageError):
    """No such object in the store (never stored, expired and deleted, or deleted on request)."""

    code = "object_not_found"


class QueueUnavailableError(ComfyJobsError):
    """Redis or the Celery broker cannot be reached; nothing was accepted."""

    code = "queue_unavailable"


# --- ComfyUI ---------------------------------------------------------------------------------------


class ComfyError(ComfyJobsError):
    code = "comfyui_error"

    def __init__(self, message: str, *, node_id: str | None = None, node_type: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.node_type = node_type

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "node_id": self.node_id, "node_type": self.node_type}


class ComfyStartError(ComfyError):
    """The managed ComfyUI process did not come up (exited, port taken, timed out)."""

    code = "comfyui_start_failed"


class ComfyUnavailableError(ComfyError):
    """ComfyUI stopped answering or its connection broke during a job."""

    code = "comfyui_unavailable"


class ComfyHungError(ComfyUnavailableError):
    """ComfyUI's process is there but silent: no websocket traffic and /system_stats unanswered."""

    code = "comfyui_hung"


class ComfyPromptRejectedError(ComfyError):
    """ComfyUI refused the graph at validation (`node_errors`)."""

    code = "comfyui_prompt_rejected"


class ComfyExecutionError(ComfyError):
    """A node raised while ComfyUI executed the graph (`execution_error`)."""

    code = "comfyui_execution_error"


class ComfyInterruptedError(ComfyError):
    code = "comfyui_interrupted"


class JobTimeoutError(ComfyJobsError):
    code = "job_timeout"


# --- Install configuration files (models.ini, custom_nodes.txt) -----------------------------------


@dataclass(frozen=True)
class LineProblem:
    file: str
    line: int | None  # None: the file as a whole (unreadable)
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


class LineFileError(ComfyJobsError):
    """A line-oriented install file is invalid. Carries every problem found, each with file and line."""

    label = "file"

    def __init__(self, problems: list[LineProblem]) -> None:
        self.problems = problems
        super().__init__(f"invalid {self.label}:\n" + "\n".join(f"  - {p}" for p in problems))


ModelsIniProblem = LineProblem
CustomNodesProblem = LineProblem


class ModelsIniError(LineFileError):
    code = "models_ini_invalid"
    label = "models.ini"


class CustomNodesFileError(LineFileError):
    code = "custom_nodes_invalid"
    label = "custom_nodes.txt"


class ModelDownloadError(ComfyJobsError):
    """One model file could not be fetched, verified or put in place; the message says why."""

    code = "model_download_failed"


# --- Workflow authoring ----------------------------------------------------------------------------


class WorkflowImportError(ComfyJobsError):
    """A workflow could not be imported (unreadable export, unknown node class, id taken, ...)."""

    code = "workflow_import_failed"


class CatalogError(ComfyJobsError):
    """A catalog version that is not there (never published, or pruned), or a name that is not one."""

    code = "catalog_version_not_found"


class NoActiveCatalogError(CatalogError):
    """Nothing is published and activated yet on this queue (`comfyjobs catalog publish`)."""

    code = "catalog_not_published"


class FleetError(ComfyJobsError):
    """A fleet operation that cannot go on (`comfyjobs fleet`): an inventory, a host or a step; the
    message names which."""

    code = "fleet_failed"
