"""A job's outputs into the object store: names, kinds, a clean slate per attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyjobs.comfy.client import OutputFile
from comfyjobs.storage.local import LocalObjectStore
from comfyjobs.storage.outputs import OutputSaver, output_kind
from comfyjobs.storage.signing import UrlSigner


def fake_download(item: OutputFile, dest: Path) -> None:
    """Stands in for ComfyClient.download (ComfyUI's /view): the file's bytes name where it came from."""
    dest.write_text(item.text if item.text is not None else f"{item.subfolder}/{item.filename}")


def test_outputs_are_stored_with_kinds(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32), "http://api")
    saver = OutputSaver(store, tmp_path / "staging")
    store.put_bytes("outputs/t1/stale.png", b"from an earlier attempt", "image/png")
    files = [
        OutputFile("9", "img_00001_.png", "", "output"),
        OutputFile("12", "img_00001_.png", "sub", "output"),  # same name from another folder
        OutputFile("13", "anim_00001_.webp", "", "output", animated=True),
        OutputFile("14", "clip_00001_.webm", "", "output", animated=True),
        OutputFile("15", "voice.flac", "", "output"),
        OutputFile("16", "text-node16-1.txt", "", "text", text="hello"),
        OutputFile("17", "../../escape.bin", "", "output"),
    ]
    stored = saver.save_all("t1", files, fake_download, retried=True)

    assert [(o.filename, o.kind, o.content_type) for o in stored] == [
        ("img_00001_.png", "image", "image/png"),
        ("img_00001_-2.png", "image", "image/png"),
        ("anim_00001_.webp", "animated_image", "image/webp"),
        ("clip_00001_.webm", "video", "video/webm"),
        ("voice.flac", "audio", "audio/flac"),
        ("text-node16-1.txt", "text", "text/plain"),
        ("escape.bin", "file", "application/octet-stream"),
    ]
    with store.open("outputs/t1/img_00001_-2.png") as fh:
        assert fh.read() == b"sub/img_00001_.png"
    assert not store.exists("outputs/t1/stale.png")  # a retried job starts clean
    assert stored[0].size_bytes == len("/img_00001_.png")
    assert not any((tmp_path / "staging").iterdir())  # nothing left behind on the worker


def test_a_first_attempt_leaves_the_prefix_alone_and_a_failed_fetch_nothing_staged(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32), "http://api")
    saver = OutputSaver(store, tmp_path / "staging")
    store.put_bytes("outputs/t2/kept.png", b"not ours to delete", "image/png")

    def half_then_fail(item: OutputFile, dest: Path) -> None:
        dest.write_bytes(b"half")
        raise OSError("ComfyUI went away")

    with pytest.raises(OSError):
        saver.save_all("t2", [OutputFile("9", "a.png", "", "output")], half_then_fail)
    assert store.exists("outputs/t2/kept.png")
    assert not any((tmp_path / "staging").iterdir())


def test_kinds() -> None:
    assert output_kind("image/gif", animated=False) == "animated_image"
    assert output_kind("image/png", animated=True) == "animated_image"
    assert output_kind("model/gltf-binary", animated=False) == "file"
