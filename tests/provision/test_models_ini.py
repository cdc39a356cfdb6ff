"""models.ini parsing: names, sources, checksums, and every problem reported with its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from comfyjobs.errors import ModelsIniError
from comfyjobs.manifests.schema import MODEL_FOLDERS
from comfyjobs.provision.models_ini import (
    HfSource,
    ModelEntry,
    UrlSource,
    parse_models_ini,
    parse_models_ini_text,
)

REPO = Path(__file__).resolve().parents[2]
SHA = "ab" * 32


def parse(text: str) -> list[ModelEntry]:
    return parse_models_ini_text(text, source_name="models.ini")


def problems(text: str) -> list[str]:
    with pytest.raises(ModelsIniError) as info:
        parse(text)
    assert info.value.code == "models_ini_invalid"
    return [str(p) for p in info.value.problems]


def test_keep_name_entries_repeat_and_keep_case() -> None:
    entries = parse(
        "[checkpoints]\n"
        "_ = https://example.com/a/Model-One.safetensors\n"
        "_ = https://example.com/b/model_TWO.ckpt\n"
        "MyModel = https://example.com/c/x.safetensors\n"
    )
    assert [(e.folder, e.filename, e.line) for e in entries] == [
        ("checkpoints", "Model-One.safetensors", 2),
        ("checkpoints", "model_TWO.ckpt", 3),
        ("checkpoints", "MyModel.safetensors", 4),
    ]
    assert entries[0].source == UrlSource("https://example.com/a/Model-One.safetensors")
    assert entries[0].sha256 is None
    assert entries[0].target == "checkpoints/Model-One.safetensors"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("renamed", "renamed.safetensors"),
        ("renamed.safetensors", "renamed.safetensors"),
        ("Renamed.SAFETENSORS", "Renamed.SAFETENSORS"),  # already has the extension, in another case
        ("v1.5-pruned", "v1.5-pruned.safetensors"),  # a dot in the name is not an extension
        ("sdxl/base", "sdxl/base.safetensors"),  # sub-folder of the model folder
    ],
)
def test_rename_adds_the_source_extension_once(key: str, expected: str) -> None:
    [entry] = parse(f"[loras]\n{key} = https://example.com/files/original.safetensors\n")
    assert entry.filename == expected


def test_rename_of_a_file_without_extension_keeps_the_name() -> None:
    [entry] = parse("[vae]\nmine = https://example.com/download/12345\n")
    assert entry.filename == "mine"


def test_url_path_is_unquoted_for_the_name_and_the_query_ignored() -> None:
    [entry] = parse("[loras]\n_ = https://example.com/f/my%20lora.safetensors?token=abc\n")
    assert entry.filename == "my lora.safetensors"
    assert entry.source == UrlSource("https://example.com/f/my%20lora.safetensors?token=abc")


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("hf://org/repo/model.safetensors", HfSource("org/repo", "model.safetensors", "main")),
        (
            "hf://org/repo/sub/dir/model.safetensors@v1.0",
            HfSource("org/repo", "sub/dir/model.safetensors", "v1.0"),
        ),
        ("hf://org/repo@fp16/sub/model.safetensors", HfSource("org/repo", "sub/model.safetensors", "fp16")),
        (
            "hf://datasets/org/data/files/model.safetensors",
            HfSource("org/data", "files/model.safetensors", "main", "dataset"),
        ),
        (
            "https://huggingface.co/org/repo/resolve/main/model.safetensors",
            HfSource("org/repo", "model.safetensors", "main"),
        ),
        (
            "https://huggingface.co/org/repo/resolve/"
            + "0123abcd" * 5
            + "/split/model.safetensors?download=true",
            HfSource("org/repo", "split/model.safetensors", "0123abcd" * 5),
        ),
        (
            "https://huggingface.co/org/repo/resolve/refs%2Fpr%2F3/model.safetensors",
            HfSource("org/repo", "model.safetensors", "refs/pr/3"),
        ),
        (
            "https://huggingface.co/org/repo/blob/main/model.safetensors",
            HfSource("org/repo", "model.safetensors", "main"),
        ),
        ("https://hf.co/gpt2/resolve/main/model.safetensors", HfSource("gpt2", "model.safetensors", "main")),
        (
            "https://huggingface.co/spaces/org/app/resolve/main/model.safetensors",
            HfSource("org/app", "model.safetensors", "main", "space"),
        ),
    ],
)
def test_hugging_face_forms(url: str, source: HfSource) -> None:
    [entry] = parse(f"[checkpoints]\n_ = {url}\n")
    assert entry.source == source
    assert entry.filename == "model.safetensors"


def test_plain_http_and_https_urls() -> None:
    entries = parse(
        "[upscale_models]\n"
        "_ = http://mirror.local/x4.pth\n"
        "_ = https://github.com/o/r/releases/download/v1/RealESRGAN_x4plus.pth\n"
    )
    assert [type(e.source) for e in entries] == [UrlSource, UrlSource]
    assert [e.filename for e in entries] == ["x4.pth", "RealESRGAN_x4plus.pth"]


def test_sha256_is_read_and_lowercased() -> None:
    upper = SHA.upper()
    entries = parse(
        f"[checkpoints]\n_ = https://example.com/a.safetensors sha256={upper}\n"
        f"b = hf://org/repo/b.safetensors@v2   sha256={SHA}\n"
    )
    assert [e.sha256 for e in entries] == [SHA, SHA]
    assert entries[1].source == HfSource("org/repo", "b.safetensors", "v2")


def test_comments_blank_lines_and_repeated_sections() -> None:
    entries = parse(
        "# header\n"
        "; also a comment\n"
        "\n"
        "[checkpoints]\n"
        "   # indented comment\n"
        "_ = https://example.com/a.safetensors\n"
        "[loras]\n"
        "_ = https://example.com/b.safetensors\n"
        "[checkpoints]\n"
        "_ = https://example.com/c.safetensors\n"
    )
    assert [(e.folder, e.filename, e.line) for e in entries] == [
        ("checkpoints", "a.safetensors", 6),
        ("loras", "b.safetensors", 8),
        ("checkpoints", "c.safetensors", 10),
    ]


def test_same_file_name_in_different_folders_is_fine() -> None:
    entries = parse(
        "[checkpoints]\n_ = https://e.com/a.safetensors\n[loras]\n_ = https://e.com/a.safetensors\n"
    )
    assert [e.target for e in entries] == ["checkpoints/a.safetensors", "loras/a.safetensors"]


def test_every_problem_is_reported_with_its_line() -> None:
    found = problems(
        "_ = https://example.com/outside.safetensors\n"  # 1: before any section
        "[checkpoints]\n"
        "_ = ftp://example.com/a.safetensors\n"  # 3: scheme
        "_ = example.com/a.safetensors\n"  # 4: not a URL
        "_ = https://example.com/a.safetensors sha256=abc\n"  # 5: short sha
        f"_ = https://example.com/a.safetensors sha256={'g' * 64}\n"  # 6: not hex
        "_ = https://example.com/b.safetensors\n"  # 7: fine
        "b = https://example.com/other/b.safetensors\n"  # 8: duplicate of line 7's target
        "_ = https://example.com/c.safetensors # inline comment\n"  # 9: junk after the URL
        "just some text\n"  # 10: no '='
        "[not_a_folder]\n"  # 11: unknown section
        "_ = https://example.com/d.safetensors\n"  # 12: under the bad section: not reported again
        "[checkpoints\n"  # 13: malformed header
        "[loras]\n"
        "_ = hf://org/model.safetensors\n"  # 15: hf:// without a repo
        "_ = https://huggingface.co/org/repo/tree/main/x.safetensors\n"  # 16: not a file URL
        "_ = https://example.com/dir/\n"  # 17: names no file
        " = https://example.com/e.safetensors\n"  # 18: no name
        "e =\n"  # 19: no URL
        "../escape = https://example.com/f.safetensors\n"  # 20: leaves the folder
        ".hidden = https://example.com/g.safetensors\n"  # 21: hidden from ComfyUI
        f"_ = https://example.com/h.safetensors sha256={SHA} sha256={SHA}\n"  # 22: sha twice
        "_ = hf://org/repo@v1/x.safetensors@v2\n"  # 23: revision twice
        "_ = hf://org/repo/x.safetensors@\n"  # 24: empty revision
        "_ = https://example.com:99999/x.safetensors\n"  # 25: port out of range
    )
    lines = [int(m[1]) for p in found if (m := re.match(r"models\.ini:(\d+): ", p))]
    assert lines == [1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25], found
    text = "\n".join(found)
    for reason in (
        "outside any [folder] section",
        "unsupported scheme ftp://",
        "not a URL",
        "sha256 must be 64 hex digits, got 'abc'",
        "duplicate target checkpoints/b.safetensors (already given at line 7)",
        "unexpected '#' after the URL",
        "expected `name = URL` or `_ = URL`",
        "unknown model folder [not_a_folder]",
        "malformed section header",
        "bad hf:// URL",
        "bad Hugging Face URL",
        "names no file",
        "missing name before `=`",
        "'e' has no URL",
        "bad target name '../escape.safetensors'",
        "hidden from ComfyUI",
        "sha256 given twice",
        "revision given twice",
        "empty revision",
        "bad URL 'https://example.com:99999/x.safetensors': Port out of range",
    ):
        assert reason in text, reason


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ModelsIniError) as info:
        parse("[nope]\n[checkpoints]\n_ = gopher://x/y.bin\n")
    assert info.value.message == (
        "invalid models.ini:\n"
        f"  - models.ini:1: unknown model folder [nope] (known: {', '.join(MODEL_FOLDERS)})\n"
        "  - models.ini:3: unsupported scheme gopher:// in 'gopher://x/y.bin' (use https://, http:// or hf://)"
    )


def test_parse_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "models.ini"
    path.write_text("\ufeff[checkpoints]\n_ = https://example.com/a.safetensors\nbroken\n", encoding="utf-8")
    with pytest.raises(ModelsIniError) as info:
        parse_models_ini(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:3: expected `name = URL` or `_ = URL`, got 'broken'"
    ]


def test_missing_file_is_a_models_ini_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsIniError, match="cannot read"):
        parse_models_ini(tmp_path / "absent.ini")


def test_shipped_example_lists_nothing_and_its_examples_are_valid() -> None:
    text = (REPO / "install" / "configs" / "models.ini").read_text(encoding="utf-8")
    assert parse(text) == []
    # The commented-out examples must work when a user uncomments them.
    uncommented = "\n".join(re.sub(r"^# (?=\[|\S+ = )", "", line) for line in text.splitlines())
    entries = parse(uncommented)
    assert entries
    assert {e.folder for e in entries} >= {"checkpoints", "loras"}
    assert any(isinstance(e.source, HfSource) for e in entries)
