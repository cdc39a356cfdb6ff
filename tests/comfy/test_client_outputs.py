from __future__ import annotations

from comfyjobs.comfy.client import OutputFile, collect_outputs, parse_preview


def test_every_file_of_every_output_node_is_collected() -> None:
    history = {
        "outputs": {
            "9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"},
                             {"filename": "a_00002_.png", "subfolder": "x", "type": "output"}]},
            "12": {"gifs": [{"filename": "clip.mp4", "subfolder": "vid", "type": "output",
                             "format": "video/h264-mp4"}], "animated": [True]},
            "15": {"audio": [{"filename": "voice.flac", "subfolder": "", "type": "output"}],
                   "text": ["hello"]},
            "20": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]},
        }
    }  # fmt: skip

    assert collect_outputs(history) == [
        OutputFile("9", "a_00001_.png", "", "output"),
        OutputFile("9", "a_00002_.png", "x", "output"),
        OutputFile("12", "clip.mp4", "vid", "output", animated=True),
        OutputFile("15", "voice.flac", "", "output"),
        OutputFile("15", "text-node15-1.txt", "", "text", text="hello"),
        OutputFile("20", "preview.png", "", "temp"),
    ]


def test_no_outputs() -> None:
    assert collect_outputs({}) == []
    assert collect_outputs({"outputs": {"3": {"animated": [True]}}}) == []


def test_text_outputs_are_kept_as_files() -> None:
    assert collect_outputs({"outputs": {"3": {"text": ["only text", 7]}}}) == [
        OutputFile("3", "text-node3-1.txt", "", "text", text="only text")
    ]


def test_preview_frames_are_parsed() -> None:
    jpeg = b"\xff\xd8jpeg-bytes"
    assert parse_preview((1).to_bytes(4, "big") + (1).to_bytes(4, "big") + jpeg) == (jpeg, "image/jpeg")
    assert parse_preview((1).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"png") == (b"png", "image/png")
    meta = b'{"image_type": "image/png", "node_id": "3"}'
    framed = (4).to_bytes(4, "big") + len(meta).to_bytes(4, "big") + meta + b"img"
    assert parse_preview(framed) == (b"img", "image/png")
    assert parse_preview((3).to_bytes(4, "big") + b"text frame") is None  # not a preview
    assert parse_preview(b"\x00\x01") is None
