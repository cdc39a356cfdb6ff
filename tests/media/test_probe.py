"""Input files are known by decoding them, within the pixel limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyjobs.errors import MediaError
from comfyjobs.media.probe import probe_file, require_kind
from tests.media_files import noise_png, png, wav, webm


def test_images_videos_audio_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(96, 64))
    image = probe_file(tmp_path / "a.png", max_pixels=10_000)
    assert (image.kind, image.content_type, image.extension, image.width, image.height) == (
        "image", "image/png", ".png", 96, 64,
    )  # fmt: skip
    video = probe_file(webm(tmp_path / "v.webm"), max_pixels=10_000)
    assert (video.kind, video.content_type, video.width, video.height) == ("video", "video/webm", 64, 48)
    audio = probe_file(wav(tmp_path / "s.wav"), max_pixels=10_000)
    assert (audio.kind, audio.content_type, audio.extension) == ("audio", "audio/wav", ".wav")
    (tmp_path / "notes.txt").write_text("just words")
    other = probe_file(tmp_path / "notes.txt", max_pixels=10_000, filename="notes.txt")
    assert (other.kind, other.content_type, other.extension) == ("file", "text/plain", ".txt")


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(png(200, 100))
    with pytest.raises(MediaError, match="20000 pixels, over INPUT_MAX_PIXELS"):
        probe_file(tmp_path / "big.png", max_pixels=19_999)
    with pytest.raises(MediaError, match="over INPUT_MAX_PIXELS"):
        probe_file(webm(tmp_path / "v.webm"), max_pixels=1000)


def test_a_truncated_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes(noise_png(30, 30)[:1000])
    with pytest.raises(MediaError, match="not a readable PNG"):
        probe_file(tmp_path / "cut.png", max_pixels=10_000)


def test_kinds_fit_parameter_types() -> None:
    require_kind("image", "image")
    require_kind("image", "mask")
    require_kind("video", "audio")  # LoadAudio reads a video's sound track
    require_kind("file", "file")
    with pytest.raises(MediaError, match="expected an image, got not an image, video or audio file"):
        require_kind("file", "image")
    with pytest.raises(MediaError, match="expected a video, got an image file"):
        require_kind("image", "video")


def test_a_broken_header_is_refused_not_crashed_on(tmp_path: Path) -> None:
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")  # a JPEG that stops in its header
    with pytest.raises(MediaError):
        probe_file(tmp_path / "cut.jpg", max_pixels=10_000)


def test_many_frames_count_as_many_pixels(tmp_path: Path) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (50, 50), (i * 30, 0, 0)) for i in range(8)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(MediaError, match="8 frames of 50x50 are 20000 pixels"):
        probe_file(tmp_path / "anim.gif", max_pixels=19_999)
    assert probe_file(tmp_path / "anim.gif", max_pixels=20_000).kind == "image"
