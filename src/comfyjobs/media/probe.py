"""What an input file is, found by decoding it: Pillow for images (and masks), PyAV for video and audio.

Sizes are checked from the header before any pixel is decoded (INPUT_MAX_PIXELS, against decompression
bombs), then one frame is decoded to prove the file is what it claims. Blocking: run it in a thread.
"""

from __future__ import annotations

import mimetypes
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
from PIL import Image, UnidentifiedImageError

from comfyjobs.errors import MediaError

Kind = Literal["image", "video", "audio", "file"]

# Which kinds of file each manifest media type takes.
ACCEPTS: dict[str, frozenset[str]] = {
    "image": frozenset({"image"}),
    "mask": frozenset({"image"}),
    "video": frozenset({"video"}),
    "audio": frozenset({"audio", "video"}),  # a video's sound track is audio to LoadAudio
    "file": frozenset({"image", "video", "audio", "file"}),
}

# PyAV container names → (content type, extension); the first name of av's list is enough.
_CONTAINERS = {
    "mov": ("video/mp4", ".mp4"),
    "matroska": ("video/webm", ".webm"),
    "avi": ("video/x-msvideo", ".avi"),
    "gif": ("image/gif", ".gif"),
    "wav": ("audio/wav", ".wav"),
    "mp3": ("audio/mpeg", ".mp3"),
    "flac": ("audio/flac", ".flac"),
    "ogg": ("audio/ogg", ".ogg"),
    "aac": ("audio/aac", ".aac"),
}
_AUDIO_ONLY_TYPES = {"video/mp4": ("audio/mp4", ".m4a"), "video/webm": ("audio/webm", ".weba")}


@dataclass(frozen=True)
class Probed:
    kind: Kind
    content_type: str
    extension: str  # with the dot: ".png"
    width: int | None = None
    height: int | None = None


def probe_file(path: Path, *, max_pixels: int, filename: str | None = None) -> Probed:
    """Decodes the start of the file; a file that is no image, video or audio is a plain ``file``."""
    image = _probe_image(path, max_pixels)
    if image is not None:
        return image
    media = _probe_av(path, max_pixels)
    if media is not None:
        return media
    content_type = (mimetypes.guess_type(filename)[0] if filename else None) or "application/octet-stream"
    extension = Path(filename).suffix.lower() if filename and Path(filename).suffix else ".bin"
    return Probed(kind="file", content_type=content_type, extension=extension)


def require_kind(kind: str, wanted: str) -> None:
    """MediaError unless a file of ``kind`` can fill a parameter of media type ``wanted``."""
    if kind not in ACCEPTS[wanted]:
        found = "not an image, video or audio file" if kind == "file" else f"{_a(kind)} {kind} file"
        raise MediaError(f"expected {_a(wanted)} {wanted}, got {found}")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(f"{width}x{height} is {width * height} pixels, over INPUT_MAX_PIXELS ({max_pixels})")


def _probe_image(path: Path, max_pixels: int) -> Probed | None:
    fmt = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or ""
                width, height = img.size
                _check_pixels(width, height, max_pixels)
                # ComfyUI's LoadImage stacks every frame: a small file of many large frames is a bomb too.
                frames = int(getattr(img, "n_frames", 1))
                if frames > 1 and frames * width * height > max_pixels:
                    raise MediaError(
                        f"{frames} frames of {width}x{height} are {frames * width * height} pixels, over "
                        f"INPUT_MAX_PIXELS ({max_pixels})"
                    )
                img.load()  # decodes the (first) frame: a truncated or corrupt file fails here
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            return None
        raise MediaError(f"image too large to decode safely: {exc}") from None
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"not a readable {fmt or 'image'} file: {exc}") from None
    content_type = Image.MIME.get(fmt, "application/octet-stream")
    extension = mimetypes.guess_extension(content_type) or f".{fmt.lower()}"
    return Probed(kind="image", content_type=content_type, extension=extension, width=width, height=height)


def _probe_av(path: Path, max_pixels: int) -> Probed | None:
    try:
        container: Any = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    try:
        videos = list(container.streams.video)
        audios = list(container.streams.audio)
        if not videos and not audios:
            return None
        name = str(container.format.name).split(",")[0]
        content_type, extension = _CONTAINERS.get(name, ("application/octet-stream", f".{name}"))
        if videos:
            width, height = int(videos[0].codec_context.width), int(videos[0].codec_context.height)
            _check_pixels(width, height, max_pixels)
            next(container.decode(video=0))
            return Probed("video", content_type, extension, width=width, height=height)
        next(container.decode(audio=0))
        content_type, extension = _AUDIO_ONLY_TYPES.get(content_type, (content_type, extension))
        return Probed("audio", content_type, extension)
    except StopIteration:
        raise MediaError("the file holds no decodable frame") from None
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot decode the file: {exc}") from None
    finally:
        container.close()
