"""Preview frames as the clients get them: JPEG, whatever format ComfyUI sent."""

from __future__ import annotations

import io

from PIL import Image

PREVIEW_JPEG_QUALITY = 85


def as_jpeg(image: bytes, content_type: str | None) -> bytes:
    """The frame as JPEG bytes (ComfyUI sends JPEG by default, PNG with --preview-format png);
    OSError if it does not decode."""
    if content_type in (None, "image/jpeg"):
        return image
    with Image.open(io.BytesIO(image)) as img:
        out = io.BytesIO()
        img.convert("RGB").save(out, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
        return out.getvalue()
