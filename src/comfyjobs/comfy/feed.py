"""One websocket to one ComfyUI, read by one thread, each message handed to the prompt it is about.

ComfyUI sends a prompt's messages to the client id it was submitted with, and its status broadcasts to
every socket. A worker runs several prompts at once on its ComfyUI (one executing, the next queued), so
they share one client id and one socket here instead of a socket each per job: no handshake per job, and
the socket is read all the time, so ComfyUI never waits on a socket nobody reads (its sends to a full
socket would stall its message loop).

A run subscribes with the prompt id it will submit under (ComfyUI takes the id we give it), *before*
posting the prompt (with the client id of the socket it subscribed on), so nothing of a fast run is
missed. Messages go to the subscription of their ``prompt_id``; binary frames (previews) carry none and
go to the prompt ComfyUI is executing. A broken socket ends every subscription with
ComfyUnavailableError; the next subscription connects again, under a new client id.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import websocket

from comfyjobs.errors import ComfyUnavailableError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# Messages no run reads (ComfyUI's queue broadcasts, its per-node state maps, cache and success notices:
# a run ends at `executing` with no node), dropped before they are parsed or handed on: 8 of a small
# prompt's 14. Recognised by how ComfyUI writes them (json.dumps of {"type": ..., "data": ...}); one
# written otherwise is parsed and ignored as before.
UNREAD_PREFIXES = tuple(
    f'{{"type": "{kind}"' for kind in ("status", "progress_state", "execution_cached", "execution_success")
)


READ_CHUNK = 65536  # what one read of the socket may take: every frame it holds


_WHOLE = (0x81, 0x82)  # a frame's first byte: final, no extension bits, text (0x1) or binary (0x2)


class _BufferedWebSocket(websocket.WebSocket):
    """websocket-client reads a frame's header, its length and its payload with a read of the socket
    each: three system calls (and hand-offs of the GIL) for a 100-byte message. This one takes what the
    socket holds, up to READ_CHUNK, in one read and hands the frame parser its bytes from there. (Only
    frames go through ``_recv``; the handshake reads the socket itself, before any of this.)

    A whole message in one unmasked frame (what ComfyUI sends but for the largest previews) that is all
    in those bytes is taken by ``recv`` itself: websocket-client's parser costs the reader several times
    more per frame than the frame's JSON. Anything else (a frame not all read yet, fragments, pings, a
    close) goes to websocket-client as before, from the same bytes."""

    _unread = b""
    _at = 0

    def recv(self) -> str | bytes:
        # Both locks: close() reads the server's close frame from another thread through the frame
        # parser, which holds only the frame buffer's lock (and is not re-entrant: released before).
        with self.readlock, self.frame_buffer.lock:
            self._fill()  # (nothing read waits: read first, as the parser would)
            whole = self._whole_frame()
        if whole is None:
            return super().recv()
        return whole

    def _whole_frame(self) -> str | bytes | None:
        unread, at = self._unread, self._at
        if len(unread) - at < 2 or unread[at] not in _WHOLE or unread[at + 1] & 0x80:  # (masked)
            return None
        length, start = unread[at + 1], at + 2
        if length == 127:  # (a 64-bit length: longer than a read's chunk can hold whole)
            return None
        if length == 126:
            if len(unread) < start + 2:
                return None
            length, start = int.from_bytes(unread[start : start + 2], "big"), start + 2
        end = start + length
        if end > len(unread):
            return None
        self._at = end
        payload = unread[start:end]
        return payload.decode("utf-8") if unread[at] == 0x81 else payload

    def _recv(self, bufsize: int) -> bytes:
        self._fill()
        chunk: bytes = self._unread[self._at : self._at + bufsize]
        self._at += len(chunk)
        return chunk

    def _fill(self) -> None:
        """Once every byte read was handed on: one read of the socket (blocking), up to READ_CHUNK."""
        if self._at >= len(self._unread):
            self._unread, self._at = super()._recv(READ_CHUNK), 0  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Message:
    """A JSON message (``kind`` and ``data``), or a binary frame (``kind`` "binary", ``frame``)."""

    kind: str
    data: dict[str, Any]
    frame: bytes = b""


_BROKEN = Message("broken", {})


class Subscription:
    """One prompt's messages, in the order ComfyUI sent them."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self._messages: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def put(self, message: Message) -> None:
        self._messages.put(message)

    def get(self, timeout_s: float) -> Message | None:
        """The next message; None if none came within ``timeout_s``. Raises ComfyUnavailableError once
        the socket broke (ComfyUI exited or restarted)."""
        try:
            message = self._messages.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if message is _BROKEN:
            self._messages.put(_BROKEN)  # every later read says so too
            raise ComfyUnavailableError("ComfyUI's websocket broke during the job")
        return message


class PromptFeed:
    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.client_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._socket: websocket.WebSocket | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._executing: str | None = None  # the prompt ComfyUI runs now: previews are its

    @contextmanager
    def subscribe(self, prompt_id: str) -> Iterator[Subscription]:
        """Messages about ``prompt_id`` from now until the block ends (connects first if needed)."""
        subscription = Subscription(prompt_id)
        with self._lock:
            if self._socket is None:
                self._socket = self._connect()
            self._subscriptions[prompt_id] = subscription
        try:
            yield subscription
        finally:
            with self._lock:
                self._subscriptions.pop(prompt_id, None)

    def close(self) -> None:
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()  # the reader's recv fails and it ends

    def _connect(self) -> websocket.WebSocket:
        # A new client id for each socket: ComfyUI forgets a client id when its old socket's handler
        # ends, which may be after the new socket took the same id.
        self.client_id = uuid.uuid4().hex
        try:
            sock = websocket.create_connection(
                f"{self.ws_url}?clientId={self.client_id}",
                timeout=CONNECT_TIMEOUT_S,
                skip_utf8_validation=True,  # (in pure Python, per frame; json.loads refuses bad text anyway)
                class_=_BufferedWebSocket,
            )
        except (OSError, websocket.WebSocketException) as exc:
            raise ComfyUnavailableError(f"cannot open ComfyUI's websocket: {exc}") from exc
        sock.settimeout(None)  # the reader blocks until a frame or the socket's end
        threading.Thread(target=self._read, args=(sock,), name="comfyui-feed", daemon=True).start()
        return sock

    def _read(self, sock: websocket.WebSocket) -> None:
        try:
            while True:
                frame = sock.recv()
                if isinstance(frame, bytes):
                    self._route_binary(frame)
                elif frame:
                    self._route_text(frame)
                else:
                    break  # closed by ComfyUI
        except (OSError, websocket.WebSocketException) as exc:
            log.debug("ComfyUI's websocket ended: %s", exc)
        except Exception:  # a frame it could not take: the socket is given up like a broken one
            log.exception("reading ComfyUI's websocket failed; it is opened again for the next prompt")
        with self._lock:
            # Every subscription is this socket's unless a newer one was opened after close().
            ours = self._socket is sock or self._socket is None
            if self._socket is sock:
                self._socket = None
            ended = list(self._subscriptions.values()) if ours else []
            self._executing = None if ours else self._executing
        for subscription in ended:  # a fresh socket is not theirs: their prompts' news went with this one
            subscription.put(_BROKEN)
        sock.close()

    def _route_text(self, frame: str) -> None:
        if frame.startswith(UNREAD_PREFIXES):
            return
        try:
            parsed = json.loads(frame)
        except ValueError:
            log.warning("ignoring a websocket frame that is not JSON: %.200s", frame)
            return
        if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), dict):
            return
        kind, data = str(parsed.get("type")), parsed["data"]
        prompt_id = data.get("prompt_id")
        with self._lock:
            if kind == "execution_start":
                self._executing = prompt_id
            elif kind == "executing" and data.get("node") is None and self._executing == prompt_id:
                self._executing = None
            subscription = self._subscriptions.get(prompt_id) if isinstance(prompt_id, str) else None
        if subscription is not None:
            subscription.put(Message(kind, data))

    def _route_binary(self, frame: bytes) -> None:
        with self._lock:
            subscription = self._subscriptions.get(self._executing) if self._executing else None
        if subscription is not None:
            subscription.put(Message("binary", {}, frame))
