from __future__ import annotations

from comfyjobs.comfy.client import OutputFile, collect_outputs


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
        OutputFile("12", "clip.mp4", "vid", "output"),
        OutputFile("15", "voice.flac", "", "output"),
        OutputFile("20", "preview.png", "", "temp"),
    ]


def test_no_outputs() -> None:
    assert collect_outputs({}) == []
    assert collect_outputs({"outputs": {"3": {"text": ["only text"]}}}) == []
