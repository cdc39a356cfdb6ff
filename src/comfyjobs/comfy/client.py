"""ComfyUI's HTTP and websocket API, and nothing else of ComfyUI.

One prompt runs as ComfyUI's websocket tells it (comfy.feed: one socket per ComfyUI, subscribed to with
the prompt's id *before* the prompt is posted, so a fast or cached run is not missed): progress and node
events are passed on as they arrive, outputs are taken from each output node's ``executed`` message, and
the run is over at ``executing {node: null}`` for our prompt id. HTTP goes through comfy.http; its
errors and the websocket's become ComfyUnavailableError.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import urllib3

from comfyjobs.comfy.feed import PromptFeed, Subscription
from comfyjobs.comfy.http import Answer, ComfyHttp
from comfyjobs.errors import (
    ComfyExecutionError,
    ComfyHungError,
    ComfyInterruptedError,
    ComfyPromptRejectedError,
    ComfyUnavailableError,
    JobTimeoutError,
)

log = logging.getLogger(__name__)

WS_RECV_TIMEOUT_S = 5.0  # this long without a message: is ComfyUI alive, and answering?
QUIET_S = 0.25  # this long without a message while the prompt runs: a "quiet" event


@dataclass(frozen=True)
class OutputFile:
    """One output of one node: a file in ComfyUI's output (or temp) folder, or a text the node showed."""

    node_id: str
    filename: str
    subfolder: str
    type: str  # "output" or "temp"; "text" for a text output
    animated: bool = False  # the node marked its images animated (SaveAnimatedWEBP/PNG, SaveWEBM)
    text: str | None = None


@dataclass(frozen=True)
class ComfyEvent:
    """What ComfyUI said about a running prompt; "quiet": nothing for QUIET_S (once per silence)."""

    kind: Literal["started", "node", "progress", "preview", "quiet"]
    node_id: str | None = None
    node_type: str | None = None
    value: int | None = None
    max: int | None = None
    image: bytes | None = None  # a preview frame
    image_type: str | None = None  # its content type


EventCallback = Callable[[ComfyEvent], None]


class PromptControl(Protocol):
    """What may stop a prompt from elsewhere while ``ComfyClient.run`` runs it (a worker's job guard)."""

    @property
    def stopped(self) -> str | None:
        """Why it was stopped (None: it goes on); asked while waiting for ComfyUI."""

    def submitting(self, prompt_id: str) -> bool:
        """Just before the prompt is sent: False sends nothing (it was stopped)."""

    def submitted(self, prompt_id: str) -> None:
        """The POST is over, whatever its outcome."""


def _describe_node_errors(node_errors: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    parts = []
    first_id: str | None = None
    first_type: str | None = None
    for node_id, entry in node_errors.items():
        class_type = entry.get("class_type")
        first_id, first_type = first_id or node_id, first_type or class_type
        for err in entry.get("errors", []):
            detail = f": {err['details']}" if err.get("details") else ""
            parts.append(f"node {node_id} ({class_type}): {err.get('message', 'invalid')}{detail}")
    return "; ".join(parts), first_id, first_type


def collect_outputs(history_entry: Mapping[str, Any]) -> list[OutputFile]:
    """Every output of every output node, none dropped: each list of files a node returns (images, gifs,
    video, audio, 3d...), and each text it shows (``text``: strings), kept as a text file."""
    files = []
    for node_id, node_output in history_entry.get("outputs", {}).items():
        animated = any(bool(a) for a in node_output.get("animated", []) or [])
        for key, items in node_output.items():
            if not isinstance(items, list):
                continue
            for index, item in enumerate(items):
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    files.append(
                        OutputFile(
                            node_id=str(node_id),
                            filename=item["filename"],
                            subfolder=item.get("subfolder", "") or "",
                            type=item.get("type", "output") or "output",
                            animated=animated and key in ("images", "gifs"),
                        )
                    )
                elif key == "text" and isinstance(item, str):
                    name = f"text-node{node_id}-{index + 1}.txt"
                    files.append(OutputFile(str(node_id), name, "", "text", text=item))
    return files


# Binary websocket frames (ComfyUI's server.BinaryEventTypes): 4-byte big-endian type, then the payload.
PREVIEW_IMAGE = 1  # payload: 4-byte image format (1 JPEG, 2 PNG), then the image
PREVIEW_IMAGE_WITH_METADATA = 4  # payload: 4-byte metadata length, JSON metadata, then the image
_PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}


def parse_preview(frame: bytes) -> tuple[bytes, str] | None:
    """(image bytes, content type) of a preview frame; None for any other binary frame."""
    if len(frame) < 8:
        return None
    kind = int.from_bytes(frame[:4], "big")
    if kind == PREVIEW_IMAGE:
        fmt = int.from_bytes(frame[4:8], "big")
        return frame[8:], _PREVIEW_FORMATS.get(fmt, "image/jpeg")
    if kind == PREVIEW_IMAGE_WITH_METADATA:
        size = int.from_bytes(frame[4:8], "big")
        try:
            meta = json.loads(frame[8 : 8 + size])
        except ValueError:
            return None
        image_type = meta.get("image_type", "image/jpeg") if isinstance(meta, dict) else "image/jpeg"
        return frame[8 + size :], str(image_type)
    return None


class ComfyClient:
    def __init__(
        self, base_url: str, *, request_timeout_s: float = 30.0, feed: PromptFeed | None = None
    ) -> None:
        """``feed``: the websocket shared by every client of this ComfyUI in the process (a worker's job
        threads); by default the client opens its own when it first runs a prompt."""
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http") :] + "/ws"
        self.request_timeout_s = request_timeout_s
        self._http = ComfyHttp(self.base_url, request_timeout_s)
        self._owns_feed = feed is None
        self._feed = feed or PromptFeed(self.ws_url)

    def close(self) -> None:
        self._http.close()
        if self._owns_feed:
            self._feed.close()

    # --- plain requests ----------------------------------------------------------------------------

    def _json(self, path: str, timeout_s: float | None = None) -> dict[str, Any]:
        resp = self._http.request("GET", path, timeout_s=timeout_s)
        if resp.status != 200:
            raise ComfyUnavailableError(f"ComfyUI's {path} answered HTTP {resp.status}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise ComfyUnavailableError(f"ComfyUI's {path} answered badly: {exc}") from exc
        if not isinstance(body, dict):
            raise ComfyUnavailableError(f"ComfyUI's {path} answered {type(body).__name__}, not an object")
        return body

    def system_stats(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self._json("/system_stats", timeout_s)

    def object_info(self) -> dict[str, Any]:
        return self._json("/object_info")

    def answers(self, timeout_s: float = 5.0) -> bool:
        try:
            return self._http.request("GET", "/system_stats", timeout_s=timeout_s).status == 200
        except ComfyUnavailableError:
            return False

    def interrupt(self, prompt_id: str | None = None) -> None:
        body = {"prompt_id": prompt_id} if prompt_id else {}
        self._http.post_json("/interrupt", body)

    def cancel(self, *prompt_ids: str) -> None:
        """Best effort: takes the prompts out of ComfyUI's queue, then interrupts any of them running.
        (`/interrupt` with a prompt id only stops the running prompt; a queued one needs the delete.) In
        that order: interrupting first would let ComfyUI start the next prompt, maybe one of these."""
        try:
            self._http.post_json("/queue", {"delete": list(prompt_ids)})
            for prompt_id in prompt_ids:
                self.interrupt(prompt_id)
        except ComfyUnavailableError as exc:
            log.warning("could not cancel prompt(s) %s: %s", ", ".join(prompt_ids), exc)

    def submit(self, graph: Mapping[str, Any], prompt_id: str | None = None) -> str:
        """Queues ``graph`` (under ``prompt_id`` when given); returns its prompt id."""
        body: dict[str, Any] = {"prompt": graph, "client_id": self._feed.client_id}
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        resp: Answer = self._http.post_json("/prompt", body)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        node_errors = body.get("node_errors") or {}
        if resp.status == 200 and body.get("prompt_id"):
            if not node_errors:
                return str(body["prompt_id"])
            # Some output nodes failed validation: ComfyUI queued the rest and would silently drop
            # those outputs. A job either runs whole or fails, so take it back out.
            self.cancel(str(body["prompt_id"]))
        if node_errors:
            message, node_id, node_type = _describe_node_errors(node_errors)
            raise ComfyPromptRejectedError(
                f"ComfyUI rejected the graph: {message}", node_id=node_id, node_type=node_type
            )
        error = body.get("error") or {}
        detail = error.get("details") or ""
        text = error.get("message") or resp.data[:500].decode(errors="replace") or f"HTTP {resp.status}"
        raise ComfyPromptRejectedError(f"ComfyUI rejected the graph: {text}{': ' + detail if detail else ''}")

    def upload_input(self, name: str, data: BinaryIO, content_type: str, subfolder: str) -> str:
        """Hands a file to ComfyUI (POST /upload/image, which takes any file into its input folder) and
        returns the name a loader input takes ("subfolder/name")."""
        form: dict[str, Any] = {"type": "input", "subfolder": subfolder, "overwrite": "true"}
        form["image"] = (name, data.read(), content_type)  # (read whole, as requests did for a form)
        payload, form_type = urllib3.encode_multipart_formdata(form)
        resp = self._http.request("POST", "/upload/image", body=payload, content_type=form_type)
        if resp.status != 200:
            raise ComfyUnavailableError(
                f"ComfyUI refused the input file {name}: HTTP {resp.status} "
                f"{resp.data[:200].decode(errors='replace')}"
            )
        try:
            body = resp.json()
            stored = str(body["name"])
            folder = str(body.get("subfolder") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise ComfyUnavailableError(f"ComfyUI's /upload/image answered badly: {exc}") from exc
        return f"{folder}/{stored}" if folder else stored

    def download(self, output: OutputFile, dest: Path) -> None:
        if output.text is not None:
            dest.write_text(output.text, encoding="utf-8")
            return
        params = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        try:
            with self._http.stream("GET", "/view", query=params) as resp:
                failed = f"could not fetch output {output.filename}"
                if resp.status != 200:
                    raise ComfyUnavailableError(f"{failed}: HTTP {resp.status}")
                with dest.open("wb") as fh:
                    while True:
                        try:
                            chunk = resp.read(1 << 20)
                        except (HTTPException, OSError) as exc:  # (the local file's errors go on up)
                            raise ComfyUnavailableError(f"{failed}: {exc}") from exc
                        if not chunk:
                            break
                        fh.write(chunk)
                if resp.length:  # (http.client ends a body cut short without a word)
                    raise ComfyUnavailableError(f"{failed}: cut short, {resp.length} bytes missing")
        except ComfyUnavailableError:
            dest.unlink(missing_ok=True)
            raise

    # --- one prompt, start to end ------------------------------------------------------------------

    def run(
        self,
        graph: Mapping[str, Any],
        *,
        on_event: EventCallback,
        timeout_s: float,
        is_alive: Callable[[], bool] = lambda: True,
        control: PromptControl | None = None,
        hang_timeout_s: float | None = None,
    ) -> list[OutputFile]:
        """Runs ``graph`` and returns its output files; raises a ComfyError subclass or JobTimeoutError.
        ``control`` is told of the POST (to cancel the prompt from elsewhere) and asked while waiting
        whether the prompt was stopped: one cancelled before it ran is only deleted from ComfyUI's queue,
        and ComfyUI then says nothing more about it. ``hang_timeout_s``: with no websocket traffic for
        this long, ComfyUI must answer /system_stats, or it counts as hung (ComfyHungError)."""
        prompt_id = uuid.uuid4().hex  # ours: the feed routes its messages from the first one on
        if control is not None and not control.submitting(prompt_id):
            raise ComfyInterruptedError("stopped from outside (cancelled) before it was queued")
        with self._feed.subscribe(prompt_id) as messages:
            try:
                self.submit(graph, prompt_id)
            finally:
                if control is not None:
                    control.submitted(prompt_id)
            try:
                outputs, error = self._follow(
                    messages, graph, on_event, timeout_s, is_alive, hang_timeout_s, control
                )
            except BaseException:
                # Timed out, lost the socket, or the caller's callback failed: don't leave the prompt
                # running in ComfyUI for the next job to queue behind.
                self.cancel(prompt_id)
                raise
        if error is not None:
            raise error
        return collect_outputs({"outputs": outputs})

    def _follow(
        self,
        messages: Subscription,
        graph: Mapping[str, Any],
        on_event: EventCallback,
        timeout_s: float,
        is_alive: Callable[[], bool],
        hang_timeout_s: float | None,
        control: PromptControl | None,
    ) -> tuple[dict[str, Any], Exception | None]:
        """The prompt's messages until ComfyUI is done with it: its outputs (each output node's
        ``executed`` message, which ComfyUI also sends for nodes served from its cache, with what
        ``/history`` would hold), and the error it ended with, if any."""
        # The time limit counts from the prompt's start: queued behind another (a worker keeps the next
        # job queued in ComfyUI), it waits at most that one's limit first.
        deadline = time.monotonic() + 2 * timeout_s

        def node_type(node_id: Any) -> str | None:
            node = graph.get(str(node_id)) if node_id is not None else None
            return node.get("class_type") if isinstance(node, Mapping) else None

        outputs: dict[str, Any] = {}
        error: Exception | None = None
        prompt_started = False
        last_traffic = last_check = time.monotonic()
        quiet = False
        while True:
            if time.monotonic() > deadline:
                raise JobTimeoutError("timed out")
            if control is not None and control.stopped:  # asked between messages, at least every QUIET_S
                raise ComfyInterruptedError("stopped from outside (cancelled)")
            message = messages.get(QUIET_S)
            if message is None:
                if not quiet and prompt_started:
                    quiet = True
                    on_event(ComfyEvent("quiet"))
                if time.monotonic() - last_check < WS_RECV_TIMEOUT_S:
                    continue
                last_check = time.monotonic()
                if not is_alive():
                    raise ComfyUnavailableError("ComfyUI exited while running the job")
                silent_s = time.monotonic() - last_traffic
                # A long node sends nothing for a while, but the HTTP server still answers then.
                if hang_timeout_s is not None and silent_s > hang_timeout_s and not self.answers():
                    raise ComfyHungError(
                        f"ComfyUI stopped answering: no websocket traffic for {silent_s:.0f} s "
                        "and /system_stats silent"
                    )
                continue
            last_traffic = last_check = time.monotonic()
            quiet = False
            kind, data = message.kind, message.data
            if kind == "binary":
                # Previews carry no prompt id; the feed passes on those sent while our prompt runs.
                preview = parse_preview(message.frame)
                if preview is not None and prompt_started:
                    on_event(ComfyEvent("preview", image=preview[0], image_type=preview[1]))
            elif kind == "execution_start":
                prompt_started = True
                deadline = time.monotonic() + timeout_s
                on_event(ComfyEvent("started"))
            elif kind == "executing":
                node = data.get("node")
                if node is None:
                    return outputs, error  # ComfyUI is done with our prompt, success or not
                on_event(ComfyEvent("node", node_id=str(node), node_type=node_type(node)))
            elif kind == "executed":
                if data.get("node") is not None and isinstance(data.get("output"), dict):
                    outputs[str(data["node"])] = data["output"]
            elif kind == "progress":
                node = data.get("node")
                on_event(
                    ComfyEvent(
                        "progress",
                        node_id=str(node) if node is not None else None,
                        node_type=node_type(node),
                        value=int(data.get("value", 0)),
                        max=int(data.get("max", 0)),
                    )
                )
            elif kind == "execution_error":
                node_id = str(data.get("node_id")) if data.get("node_id") is not None else None
                error = ComfyExecutionError(
                    f"{data.get('node_type')} (node {node_id}) failed: "
                    f"{data.get('exception_type', 'Error')}: {data.get('exception_message', '').strip()}",
                    node_id=node_id,
                    node_type=data.get("node_type"),
                )
            elif kind == "execution_interrupted":
                node_id = str(data.get("node_id")) if data.get("node_id") is not None else None
                error = ComfyInterruptedError(
                    "ComfyUI interrupted the job", node_id=node_id, node_type=data.get("node_type")
                )
