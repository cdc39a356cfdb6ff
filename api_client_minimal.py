#!/usr/bin/env python3
"""A small comfyjobs client: `requests` and the standard library only, for scripts and cron jobs.

Command line:
    python api_client_minimal.py list
    python api_client_minimal.py run txt2img --param prompt="a red fox" --param seed=1 --out outputs
    python api_client_minimal.py run img2img --param image=@photo.png --param prompt="a red fox"
    python api_client_minimal.py status TASK_ID [--wait]
Options: --server URL (or COMFYJOBS_SERVER), --api-key KEY (or COMFYJOBS_API_KEY), --timeout SECONDS
(the whole wait; it never waits forever), --json (machine-readable output on stdout).
A media parameter (image, mask, video, audio, file) takes an asset id, an http(s) or data: URL, or
@PATH: a local file, uploaded first (POST /assets) and sent as its asset id. `@@` sends a literal `@`.

As a library:
    import api_client_minimal as cj
    task_id = cj.generate("txt2img", {"prompt": "a red fox"}, server="http://gpu-box:8000")
    asset = cj.upload("photo.png", server="http://gpu-box:8000")  # or give Path("photo.png") as the value
    task_id = cj.generate("img2img", {"image": asset["id"], "prompt": "a fox"}, server="http://gpu-box:8000")
    task = cj.wait(task_id, timeout_s=600, server="http://gpu-box:8000")
    paths = cj.download(task, "outputs", server="http://gpu-box:8000")

Exit codes: 0 done, 1 the job failed, 2 usage (also a @file that cannot be read), 3 parameters or an
uploaded file refused (400/413/422), 4 not found (404),
5 the service cannot take it now (409/429/503), 6 the service cannot be reached (or is not comfyjobs),
7 timed out waiting, 8 API key missing or wrong (401/403), 9 outputs could not be saved,
130 interrupted (the job goes on).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = ("SUCCESS", "FAILURE", "CANCELLED")
LONG_POLL_S = 30.0  # one long poll's wait; the service answers sooner when the task changes
CONNECT_TIMEOUT_S = 10.0

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_REJECTED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_UNAVAILABLE, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_AUTH, EXIT_SAVE = 5, 6, 7, 8, 9
EXIT_INTERRUPTED = 130

MEDIA_TYPES = ("image", "mask", "video", "audio", "file")  # parameter types whose value is a file


class ApiError(Exception):
    """Anything that keeps a request from its answer: an HTTP error from the service, or no answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        fields: list[dict[str, str]] | None = None,
        exit_code: int = EXIT_UNREACHABLE,
        context: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.fields = fields or []
        self.exit_code = exit_code
        self.context = context  # what was being done, e.g. "--param image=@photo.png"; shown first

    def __str__(self) -> str:
        lines = [self.message] if not self.fields else ["the service refused the request:"]
        if self.context:
            lines[0] = f"{self.context}: {lines[0]}"
        lines += [f"  {f['field']}: {f['reason']}" for f in self.fields]
        return "\n".join(lines)


class WaitTimeoutError(ApiError):
    def __init__(self, task_id: str, timeout_s: float, task: dict[str, Any] | None) -> None:
        status = task["status"] if task else "unknown"
        blocked = ((task or {}).get("queue") or {}).get("blocked")
        super().__init__(
            f"task {task_id} is still {status} after {timeout_s:g} s; it goes on in the service "
            f"(follow it with: status {task_id})" + (f"\nit waits because {blocked}" if blocked else ""),
            exit_code=EXIT_TIMEOUT,
        )
        self.task = task


_EXIT_FOR_STATUS = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_UNAVAILABLE}
_EXIT_FOR_STATUS |= {400: EXIT_REJECTED, 413: EXIT_REJECTED, 422: EXIT_REJECTED}
_EXIT_FOR_STATUS |= {429: EXIT_UNAVAILABLE, 503: EXIT_UNAVAILABLE}


@dataclass(frozen=True)
class LocalFile:
    """A media parameter's value that is a file on this machine (``--param image=@photo.png``): uploaded
    with POST /assets before the job is queued, and sent as the asset's id."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str is welcome too

    @property
    def name(self) -> str:
        return self.path.name


def guess_content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _origin(url: str) -> tuple[str, str, int | None]:
    split = urlsplit(url)
    scheme = split.scheme.lower()
    try:
        port = split.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # a port that is not a number: never the service's own
        port = -1
    return scheme, (split.hostname or "").lower(), port


def _error_from_response(resp: requests.Response, *, own: bool = True) -> ApiError:
    try:
        error = resp.json()["error"]
        message, code, fields = str(error["message"]), str(error["code"]), error.get("fields")
    except (ValueError, KeyError, TypeError):
        message, code, fields = f"HTTP {resp.status_code}: {resp.text[:200]}", "", None
    exit_code = _EXIT_FOR_STATUS.get(resp.status_code, EXIT_UNAVAILABLE)
    if not own:  # a file's link to another host (a bucket): its key is in the link, not ours
        message = f"{urlsplit(resp.url).netloc} answered HTTP {resp.status_code} (the link may have expired)"
        code, fields, exit_code = "", None, EXIT_SAVE
    elif resp.status_code in (401, 403) and code != "url_signature_invalid":
        message += " (give the key with --api-key or COMFYJOBS_API_KEY)"
    retry_after = resp.headers.get("Retry-After")
    if resp.status_code in (429, 503) and retry_after:
        message += f" (retry after {retry_after} s)"
    return ApiError(
        message,
        status=resp.status_code,
        code=code,
        fields=fields,
        exit_code=exit_code,
    )


class Client:
    """One service. Every method raises ApiError (with an exit code) on failure, never a requests error."""

    def __init__(
        self, server: str | None = None, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.server = (server or os.environ.get("COMFYJOBS_SERVER") or DEFAULT_SERVER).rstrip("/")
        self._origin = _origin(self.server)
        self.timeout_s = timeout_s
        self.session = requests.Session()
        key = api_key or os.environ.get("COMFYJOBS_API_KEY")
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.server}{path}"

    def is_own(self, url: str) -> bool:
        """Whether ``url`` is on the service itself (same scheme, host and port as --server): only
        there does the API key go. Output links to a bucket carry their own signature."""
        return _origin(self.url(url)) == self._origin

    def request(self, method: str, path: str, *, read_timeout_s: float | None = None, **kwargs: Any) -> Any:
        resp = self._send(method, path, read_timeout_s=read_timeout_s, **kwargs)
        if resp.status_code == 204:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ApiError(
                f"{self.server} answered {method} {path} with something that is not JSON "
                "(is --server a comfyjobs API?)"
            ) from None

    def _send(
        self, method: str, path: str, *, read_timeout_s: float | None = None, **kwargs: Any
    ) -> requests.Response:
        timeout = (CONNECT_TIMEOUT_S, read_timeout_s or self.timeout_s)
        url = self.url(path)
        own = self.is_own(url)
        where = f"the service at {self.server}" if own else urlsplit(url).netloc
        if not own:  # None drops the session's header from this request: the key stays with the service
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": None}
        try:
            resp = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            raise ApiError(f"cannot reach {where}: {_reason(exc)}") from None
        except requests.exceptions.Timeout:
            raise ApiError(f"{where} did not answer within {timeout[1]:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise ApiError(f"request to {where} failed: {exc}") from None
        if resp.status_code >= 400:
            error = _error_from_response(resp, own=own)
            resp.close()
            raise error
        return resp

    # --- what the service offers --------------------------------------------------------------------

    def workflows(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/workflows"))

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/workflows/{workflow_id}"))

    def loras(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/loras"))

    # --- input files ---------------------------------------------------------------------------------------

    def upload(self, path: str | Path, *, content_type: str | None = None) -> dict[str, Any]:
        """Uploads a local file (POST /assets) and returns the asset; its ``id`` is the value to give a
        media parameter. Same bytes, same asset: uploading a file again costs nothing but the transfer.

        A file that cannot be read raises ApiError with EXIT_USAGE; one the service refuses (too big,
        not decodable) ApiError with EXIT_REJECTED."""
        source = Path(path).expanduser()
        try:
            with source.open("rb") as fh:
                files = {"file": (source.name, fh, content_type or guess_content_type(source.name))}
                # Generous: the service reads, hashes and probes the whole file before it answers.
                return dict(self.request("POST", "/assets", files=files, read_timeout_s=self.timeout_s * 4))
        except OSError as exc:  # requests' own errors are ApiErrors by now: this is the local file
            raise ApiError(f"cannot read {source}: {exc.strerror or exc}", exit_code=EXIT_USAGE) from None

    def upload_param(self, name: str, local: LocalFile) -> dict[str, Any]:
        """``upload`` for parameter ``name``: a failure says which parameter and file it was."""
        try:
            return self.upload(local.path)
        except ApiError as exc:
            exc.context = f"--param {name}=@{local.path}"
            raise

    def upload_files(
        self,
        params: dict[str, Any],
        on_upload: Callable[[str, LocalFile, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """``params`` with each LocalFile (or Path) value uploaded and replaced by its asset id."""
        resolved = dict(params)
        for name, value in params.items():
            if isinstance(value, Path):
                value = LocalFile(value)
            if isinstance(value, LocalFile):
                asset = self.upload_param(name, value)
                resolved[name] = asset["id"]
                if on_upload is not None:
                    on_upload(name, value, asset)
        return resolved

    # --- jobs --------------------------------------------------------------------------------------------

    def generate(
        self,
        workflow_id: str,
        params: dict[str, Any],
        *,
        priority: int | None = None,
        webhook_url: str | None = None,
    ) -> dict[str, Any]:
        """Queues a job; returns the service's answer (task_id, status, params as resolved).

        LocalFile (or Path) values are uploaded first and sent as their asset ids. ``priority``: 0-9,
        higher first (the service's default: 5); ``webhook_url``: where the service posts the task's
        changes (signed; the service needs WEBHOOK_SECRET)."""
        params = self.upload_files(params)
        body: dict[str, Any] = {"workflow_id": workflow_id, "params": params}
        if priority is not None:
            body["priority"] = priority
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        return dict(self.request("POST", "/generate", json=body))

    def status(
        self,
        task_id: str,
        *,
        wait_s: float | None = None,
        since: str | None = None,
        position: int | None = None,
    ) -> dict[str, Any]:
        """The task; with ``wait_s``, a long poll that answers when it changes after event ``since``
        (or, while queued, leaves queue ``position``)."""
        params: dict[str, Any] = {}
        if wait_s is not None:
            params["wait"] = wait_s
            if since:
                params["since"] = since
            if position:
                params["position"] = position
        read_timeout_s = None if wait_s is None else wait_s + self.timeout_s
        return dict(self.request("GET", f"/tasks/{task_id}", params=params, read_timeout_s=read_timeout_s))

    def wait(
        self,
        task_id: str,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Follows the task with long polls (each answers as soon as it changes) until it finishes.

        Raises WaitTimeoutError after ``timeout_s`` (None: no limit); the job itself goes on."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        task = self.status(task_id)
        while True:
            if on_update is not None:
                on_update(task)
            if task["status"] in TERMINAL:
                return task
            wait_s = LONG_POLL_S
            if deadline is not None:
                wait_s = min(wait_s, deadline - time.monotonic())
                if wait_s <= 0:
                    raise WaitTimeoutError(task_id, float(timeout_s or 0), task)
            queue = task.get("queue") or {}
            task = self.status(
                task_id, wait_s=wait_s, since=task.get("last_event_id"), position=queue.get("position")
            )

    def events(
        self, task_id: str, last_event_id: str | None = None, *, previews: bool = False
    ) -> Iterator[tuple[str, str | None, Any]]:
        """The task's Server-Sent Events as (event, id, data); heartbeats come as ("heartbeat", None, None).

        Each event's data is the task, except with ``previews``: then ("preview", None, {task_id,
        content_type, image_base64}) events come too (in-progress frames; no id, so never one to resume
        from). Ends after the final event. A dropped connection raises ApiError; call again with the last
        id seen."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        resp = self._send(
            "GET", f"/tasks/{task_id}/events", headers=headers, stream=True, read_timeout_s=self.timeout_s * 4
        )
        if resp.status_code == 204:
            return
        try:
            for event in _parse_sse(resp.iter_lines(decode_unicode=True)):
                if event[0] == "preview" and not previews:
                    continue
                yield event
        except requests.exceptions.RequestException as exc:
            raise ApiError(f"the events stream from {self.server} broke off: {_reason(exc)}") from None
        except ValueError:
            raise ApiError(f"{self.server} sent an event that is not JSON (is it a comfyjobs API?)") from None
        finally:
            resp.close()

    def download(self, task: dict[str, Any], out_dir: str | Path) -> list[Path]:
        """Saves every output of a finished task under ``out_dir``; returns the paths."""
        folder = Path(out_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ApiError(f"cannot create {folder}: {exc.strerror}", exit_code=EXIT_SAVE) from None
        saved = []
        for output in task.get("outputs", []):
            target = folder / output_filename(output)
            resp = self._fetch_output(task, output)
            partial = target.with_name(target.name + ".part")
            try:
                with partial.open("wb") as fh:
                    for chunk in resp.iter_content(chunk_size=1 << 16):
                        fh.write(chunk)
                partial.replace(target)
            except requests.exceptions.RequestException as exc:
                partial.unlink(missing_ok=True)
                raise ApiError(f"download of {target.name} broke off: {_reason(exc)}") from None
            except OSError as exc:
                raise ApiError(f"cannot save {target}: {exc.strerror}", exit_code=EXIT_SAVE) from None
            finally:
                resp.close()
            saved.append(target)
        return saved

    def _fetch_output(self, task: dict[str, Any], output: dict[str, Any]) -> requests.Response:
        """GETs an output's signed link; one that has expired (403) is read afresh from the task."""
        try:
            return self._send("GET", output["url"], stream=True)
        except ApiError as exc:
            if exc.status != 403 or not task.get("task_id"):
                raise
        fresh = self.status(str(task["task_id"]))
        for again in fresh.get("outputs", []):
            if again.get("filename") == output.get("filename"):
                return self._send("GET", again["url"], stream=True)
        raise ApiError(
            f"task {task['task_id']} no longer has {output.get('filename')!r} (outputs deleted or expired)",
            status=404,
            exit_code=EXIT_NOT_FOUND,
        )


def output_filename(output: dict[str, Any]) -> str:
    """The name to save an output under: its ``filename`` (no folders), else the last part of its URL's
    path; never the query string of a signed link."""
    for candidate in (str(output.get("filename") or ""), unquote(urlsplit(str(output.get("url", ""))).path)):
        name = Path(candidate.replace("\\", "/")).name
        if name not in ("", ".", ".."):
            return name
    return "output"


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "timed out", "Connection reset"):
        if known in text:
            return known.lower()
    return text.split(": ")[-1][:200] or type(exc).__name__


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str | None, Any]]:
    event, event_id, comment = "message", None, False
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, event_id, json.loads("\n".join(data))
            elif comment:
                yield "heartbeat", None, None
            event, event_id, data, comment = "message", None, [], False
        elif line.startswith(":"):
            comment = True
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value or "message"
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


# --- module-level shortcuts for scripts ---------------------------------------------------------------


def generate(
    workflow_id: str,
    params: dict[str, Any],
    *,
    server: str | None = None,
    api_key: str | None = None,
    priority: int | None = None,
    webhook_url: str | None = None,
) -> str:
    """Queues a job and returns its task id."""
    with Client(server, api_key) as client:
        accepted = client.generate(workflow_id, params, priority=priority, webhook_url=webhook_url)
        return str(accepted["task_id"])


def wait(
    task_id: str,
    *,
    timeout_s: float | None = None,
    server: str | None = None,
    api_key: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Waits for the task to finish (SUCCESS or FAILURE) and returns it; WaitTimeoutError after timeout_s."""
    with Client(server, api_key) as client:
        return client.wait(task_id, timeout_s, on_update)


def download(
    task: dict[str, Any], out_dir: str | Path, *, server: str | None = None, api_key: str | None = None
) -> list[Path]:
    """Saves the finished task's outputs under ``out_dir``; returns their paths."""
    with Client(server, api_key) as client:
        return client.download(task, out_dir)


def upload(path: str | Path, *, server: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    """Uploads a local file; returns the asset (its ``id`` is the value for a media parameter)."""
    with Client(server, api_key) as client:
        return client.upload(path)


# --- parameters from the command line ---------------------------------------------------------------------


def parse_param_args(pairs: list[str], workflow: dict[str, Any]) -> dict[str, Any]:
    """`name=value` strings → typed values, by the workflow's parameter types (GET /workflows/{id}).

    `name=@path` (media parameters only) → LocalFile, to upload before queueing (Client.upload_files);
    `name=@@text` → the text "@text"."""
    types = {p["name"]: p for p in workflow.get("parameters", [])}
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ApiError(f"--param {pair!r}: expected NAME=VALUE", exit_code=EXIT_USAGE)
        if text.startswith("@@"):
            params[name] = _typed(text[1:], types.get(name))
        elif text.startswith("@"):
            params[name] = _local_file(name, text[1:], types)
        else:
            params[name] = _typed(text, types.get(name))
    return params


def media_parameters(workflow: dict[str, Any]) -> list[str]:
    """The workflow's parameters that take a file (asset id, URL, data: URL, or @path on the command line)."""
    return [p["name"] for p in workflow.get("parameters", []) if p.get("type") in MEDIA_TYPES]


def _local_file(name: str, raw: str, types: dict[str, dict[str, Any]]) -> LocalFile:
    where = f"--param {name}=@{raw}"
    spec = types.get(name)
    if spec is None or spec.get("type") not in MEDIA_TYPES:
        files = media_parameters({"parameters": list(types.values())})
        what = "not a parameter of this workflow" if spec is None else f"a {spec.get('type')} parameter"
        takes = (
            f"only file parameters ({', '.join(files)}) take"
            if files
            else "this workflow has no file parameter for"
        )
        raise ApiError(
            f"{where}: {name} is {what}, not a file parameter; {takes} @PATH "
            "(write @@ to send a value that starts with @)",
            exit_code=EXIT_USAGE,
        )
    if not raw:
        raise ApiError(f"{where}: expected a file path after @", exit_code=EXIT_USAGE)
    path = Path(raw).expanduser()
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ApiError(f"{where}: {path} is not a file", exit_code=EXIT_USAGE)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        named = "" if str(path) == raw else f" ({path})"  # where ~ led
        raise ApiError(f"{where}{named}: {exc.strerror or exc}", exit_code=EXIT_USAGE) from None
    return LocalFile(path)


def _typed(text: str, spec: dict[str, Any] | None) -> Any:
    if spec is None:
        return text  # not a parameter of this workflow: the service names it in its refusal
    if spec.get("nullable") and text.lower() in ("", "null", "none"):
        return None
    kind = spec.get("type")
    try:
        if kind == "integer" and text != "random":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text  # the service explains what it expected
    if kind == "boolean":
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
    return text


def eta_text(when: str, now: datetime | None = None) -> str:
    """An estimate (ISO time from the API) as the client says it: "in ~12 s", "in ~3 min"."""
    try:
        at = datetime.fromisoformat(when)
    except ValueError:
        return when
    seconds = max(0.0, (at - (now or datetime.now(UTC))).total_seconds())
    return f"in ~{seconds:.0f} s" if seconds < 120 else f"in ~{seconds / 60:.0f} min"


# --- command line --------------------------------------------------------------------------------------


def _progress_line(task: dict[str, Any]) -> str:
    status = str(task["status"])
    if status == "PENDING" and task.get("queue"):
        line = f"{status}: position {task['queue']['position']} of {task['queue']['waiting']} in the queue"
        if task["queue"].get("blocked"):
            line += f"; {task['queue']['blocked']}"
        elif task.get("estimated_start_at"):
            line += f", starts {eta_text(task['estimated_start_at'])}"
        return line
    progress = task.get("progress") or {}
    if progress.get("max") and status not in TERMINAL:
        node = progress.get("node_type") or progress.get("node") or ""
        return f"{status}: {node} {progress['value']}/{progress['max']} ({progress['percent']:.0f}%)"
    return status


def _cmd_list(client: Client, args: argparse.Namespace) -> int:
    workflows, loras = client.workflows(), client.loras()
    if args.json:
        print(json.dumps({"workflows": workflows, "loras": loras}, indent=2))
        return EXIT_OK
    for wf in workflows:
        found = wf.get("availability")
        state = (
            "unknown (no worker has checked it)"
            if found is None
            else ("ready" if found["ready"] else "UNAVAILABLE")
        )
        print(f"{wf['id']}: {wf['description']} [{state}]")
        for p in wf["parameters"]:
            default = "required" if p["required"] else f"default {p.get('default')!r}"
            print(f"    {p['name']} ({p['type']}, {default}): {p['description']}")
    for lora in loras:
        installed = "installed" if lora["installed"] else "not installed"
        print(f"lora {lora['name']} [{installed}]: {lora['description']}")
    return EXIT_OK


def _cmd_run(client: Client, args: argparse.Namespace) -> int:
    params = parse_param_args(args.param, client.workflow(args.workflow))

    def uploaded(name: str, local: LocalFile, asset: dict[str, Any]) -> None:
        if not args.json:
            print(f"uploaded {local.name} -> asset {asset['id'][:12]} ({name})", file=sys.stderr)

    params = client.upload_files(params, on_upload=uploaded)
    accepted = client.generate(args.workflow, params, priority=args.priority, webhook_url=args.webhook_url)
    task_id = accepted["task_id"]
    if not args.json:
        print(f"task {task_id} queued", file=sys.stderr)

    last = [""]

    def show(task: dict[str, Any]) -> None:
        line = _progress_line(task)
        if not args.json and line != last[0]:
            print(line, file=sys.stderr)
            last[0] = line

    try:
        task = client.wait(task_id, args.timeout, on_update=show)
    except KeyboardInterrupt:
        print(f"\ndetached; task {task_id} goes on (status {task_id})", file=sys.stderr)
        return EXIT_INTERRUPTED
    saved = (
        [str(p) for p in client.download(task, Path(args.out) / task_id)]
        if task["status"] == "SUCCESS"
        else []
    )
    if args.json:
        print(json.dumps({**task, "saved": saved}, indent=2))
    elif task["status"] == "SUCCESS":
        for path in saved:
            print(path)
    else:
        error = task.get("error") or {}
        print(f"task {task_id} failed: {error.get('message', 'no reason given')}", file=sys.stderr)
    return EXIT_OK if task["status"] == "SUCCESS" else EXIT_JOB_FAILED


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    if args.wait:
        try:
            task = client.wait(args.task_id, args.timeout)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    else:
        task = client.status(args.task_id)
    if args.json:
        print(json.dumps(task, indent=2))
    else:
        print(f"{task['task_id']} ({task['workflow_id']}): {_progress_line(task)}")
        for output in task["outputs"]:
            print(f"  {output['url']}")
        if task.get("error"):
            print(f"  error: {task['error']['message']}")
    return EXIT_JOB_FAILED if task["status"] in ("FAILURE", "CANCELLED") else EXIT_OK


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def common_options() -> argparse.ArgumentParser:
    """The options every command of both clients takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", help=f"service URL (default: $COMFYJOBS_SERVER or {DEFAULT_SERVER})")
    common.add_argument("--api-key", help="API key (default: $COMFYJOBS_API_KEY)")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument(
        "--timeout", type=positive_seconds, default=None, help="stop waiting after this many seconds"
    )
    return common


def job_options() -> argparse.ArgumentParser:
    """How a job is queued (both clients' `run`)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--priority", type=int, choices=range(10), metavar="0-9", help="higher first (service default: 5)"
    )
    options.add_argument("--webhook-url", help="the service posts the task's changes there (signed)")
    return options


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(description="comfyjobs client (requests only)", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="workflows and LoRAs")
    run = commands.add_parser(
        "run", parents=[common, job_options()], help="queue a job, wait, download its outputs"
    )
    run.add_argument("workflow")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--out", default="outputs", help="outputs go to OUT/<task_id>/ (default: outputs)")
    status = commands.add_parser("status", parents=[common], help="a task's status")
    status.add_argument("task_id")
    status.add_argument("--wait", action="store_true", help="wait until it finishes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[Client, argparse.Namespace], int]] = {
        "list": _cmd_list,
        "run": _cmd_run,
        "status": _cmd_status,
    }
    with Client(args.server, args.api_key) as client:
        try:
            return commands[args.command](client, args)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
