"""Small media files made on the spot for the tests (Pillow and PyAV, both installed with ComfyUI)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image


def png(width: int = 96, height: int = 64, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def noise_png(width: int = 64, height: int = 64) -> bytes:
    """Random pixels: no compression to speak of, so a cut file is missing pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def mask_png(width: int = 96, height: int = 64) -> bytes:
    """Black, with a white square in the middle: the area to repaint."""
    img = Image.new("L", (width, height), 0)
    img.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def webm(path: Path, frames: int = 4, width: int = 64, height: int = 48) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def wav(path: Path, samples: int = 800) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
