"""The websocket feed: what a run reads reaches its subscription, in order, and what none reads is dropped
unparsed (its routing, without a socket); frames read from a real socket come whole, however it splits
them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
from typing import Any

from comfyjobs.comfy.feed import PromptFeed, Subscription, _BufferedWebSocket

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


def test_messages_no_run_reads_are_dropped_and_the_rest_handed_on_in_order() -> None:
    feed = PromptFeed("ws://127.0.0.1:1/ws")
    mine = Subscription("p1")
    feed._subscriptions["p1"] = mine  # as subscribe() does, without connecting
    sent = [
        ("status", {"status": {"exec_info": {"queue_remaining": 1}}}),
        ("execution_start", {"prompt_id": "p1"}),
        ("execution_cached", {"nodes": [], "prompt_id": "p1"}),
        ("progress_state", {"prompt_id": "p1", "nodes": {}}),
        ("executing", {"node": "1", "prompt_id": "p1"}),
        ("progress", {"value": 1, "max": 4, "node": "1", "prompt_id": "p1"}),
        ("executed", {"node": "2", "output": {"images": []}, "prompt_id": "p1"}),
        ("executing", {"node": "2", "prompt_id": "p2"}),  # another prompt's
        ("execution_success", {"prompt_id": "p1"}),
        ("executing", {"node": None, "prompt_id": "p1"}),
    ]
    for kind, data in sent:
        feed._route_text(json.dumps({"type": kind, "data": data}))  # as ComfyUI writes them

    received = []
    while (message := mine.get(0)) is not None:
        received.append((message.kind, message.data))
    assert received == [
        ("execution_start", {"prompt_id": "p1"}),
        ("executing", {"node": "1", "prompt_id": "p1"}),
        ("progress", {"value": 1, "max": 4, "node": "1", "prompt_id": "p1"}),
        ("executed", {"node": "2", "output": {"images": []}, "prompt_id": "p1"}),
        ("executing", {"node": None, "prompt_id": "p1"}),
    ]


def frame(opcode: int, payload: bytes, final: bool = True) -> bytes:
    """A server's frame (unmasked), with the length in whichever of its three forms fits."""
    n, first = len(payload), (0x80 if final else 0) | opcode
    if n < 126:
        head = bytes([first, n])
    elif n < 65536:
        head = bytes([first, 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 127]) + struct.pack("!Q", n)
    return head + payload


def text(kind: str, data: dict[str, Any]) -> bytes:
    return frame(0x1, json.dumps({"type": kind, "data": data}).encode())


def serve_once(listener: socket.socket, frames: bytes) -> None:
    """Accepts one websocket, answers its handshake, sends ``frames`` in one write, and closes."""
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", request, re.IGNORECASE)
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.group(1) + WS_GUID).digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + frames
        )
        conn.shutdown(socket.SHUT_WR)
        conn.recv(4096)  # until the client goes


def test_frames_come_whole_and_in_order_however_the_socket_splits_them() -> None:
    """Many frames in one read, frames across reads (a preview bigger than a read's chunk, a text with a
    64-bit length), a message in fragments with a ping among them, then a thousand more small frames
    (where reads end at whatever byte): each message comes once, whole, in order, whichever of the
    feed's fast path or websocket-client's parser took it."""
    preview = bytes(range(256)) * 1000  # 256 kB: split over several reads
    long_text = {"prompt_id": "p1", "node": "2", "output": {"text": ["x" * 70_000]}}
    pieces = json.dumps({"type": "executed", "data": {"prompt_id": "p1", "node": "3", "output": {}}}).encode()
    sent = b"".join(
        [
            text("execution_start", {"prompt_id": "p1"}),
            *(text("progress", {"value": i, "max": 300, "prompt_id": "p1"}) for i in range(1, 301)),
            frame(0x2, preview),
            text("executed", long_text),  # a 64-bit length
            frame(0x1, pieces[:10], final=False),
            frame(0x9, b"ping"),  # answered by websocket-client, between a message's fragments
            frame(0x0, pieces[10:20], final=False),
            frame(0x0, pieces[20:], final=True),
            *(text("progress", {"value": i, "max": 300, "prompt_id": "p1"}) for i in range(1, 1001)),
            text("executing", {"node": None, "prompt_id": "p1"}),
        ]
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(target=serve_once, args=(listener, sent))
        server.start()
        feed = PromptFeed(f"ws://127.0.0.1:{port}/ws")
        try:
            with feed.subscribe("p1") as mine:
                received = []
                while not received or received[-1].data.get("node", "") is not None:
                    message = mine.get(30)
                    assert message is not None, "the feed stopped short"
                    received.append(message)
        finally:
            feed.close()
            server.join(30)

    assert [m.kind for m in received] == [
        "execution_start",
        *["progress"] * 300,
        "binary",
        "executed",
        "executed",
        *["progress"] * 1000,
        "executing",
    ]
    assert [m.data["value"] for m in received if m.kind == "progress"] == [*range(1, 301), *range(1, 1001)]
    assert received[301].frame == preview
    assert received[302].data == long_text
    assert received[303].data == {"prompt_id": "p1", "node": "3", "output": {}}


def test_a_frame_cut_at_any_byte_by_a_read_comes_whole() -> None:
    """The feed's socket, given a whole frame and the start of the next in one read, returns the first
    and then the second once its rest arrives, wherever the cut falls: in its header, its length or its
    payload (the fast path takes only frames all read; websocket-client's parser finishes the rest)."""
    first, second = frame(0x1, b"hello"), frame(0x2, bytes(range(200)))  # (a 16-bit length)
    stream = first + second + frame(0x1, b"after")
    for cut in range(len(first) + 1, len(first) + len(second)):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.settimeout(5)  # (a frame parsed wrong waits for bytes that never come: fail, not hang)
            ws = _BufferedWebSocket(skip_utf8_validation=True)
            ws.sock, ws.connected = ours, True  # (a socket past its handshake)
            theirs.sendall(stream[:cut])
            assert ws.recv() == "hello"
            theirs.sendall(stream[cut:])
            assert ws.recv() == bytes(range(200)), f"cut at byte {cut}"
            assert ws.recv() == "after"


def test_whole_frames_already_read_skip_websocket_clients_parser() -> None:
    """What the fast path is for: text and binary frames all in one read never reach the frame parser
    (which costs the feed's reader several times more per frame); a ping still does, and is answered."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        ws = _BufferedWebSocket(skip_utf8_validation=True)
        ws.sock, ws.connected = ours, True
        parsed = []
        parse = ws.frame_buffer.recv_frame

        def counted() -> Any:
            frame_ = parse()
            parsed.append(frame_.opcode)
            return frame_

        ws.frame_buffer.recv_frame = counted  # type: ignore[method-assign]
        theirs.sendall(frame(0x1, b"a") + frame(0x2, bytes(300)) + frame(0x9, b"hi") + frame(0x1, b"b"))
        assert [ws.recv(), ws.recv()] == ["a", bytes(300)]
        assert parsed == []
        assert ws.recv() == "b"  # the ping before it went through the parser, which answered it
        assert parsed == [0x9, 0x1]
        theirs.settimeout(5)
        assert theirs.recv(64)[0] == 0x8A  # the pong (masked, as a client's frames are)
