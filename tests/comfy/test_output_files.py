"""ComfyUI's copies of the outputs: the last prompts' kept, older ones deleted, never across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyjobs.comfy.client import OutputFile
from comfyjobs.comfy.output_files import ComfyOutputFiles, keeps_older_results, output_path


class Folders:
    def __init__(self, root: Path) -> None:
        self.by_type = {"output": root / "output", "temp": root / "temp"}
        for folder in self.by_type.values():
            folder.mkdir()

    def save(self, name: str, kind: str = "output", subfolder: str = "") -> OutputFile:
        path = self.by_type[kind] / subfolder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return OutputFile("9", name, subfolder, kind)

    def names(self) -> set[str]:
        return {p.name for folder in self.by_type.values() for p in folder.rglob("*") if p.is_file()}


def done(files: ComfyOutputFiles, outputs: list[OutputFile], ran_on: int) -> None:
    with files.reported(outputs, ran_on):
        pass  # (stored)


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path)


def test_the_files_of_the_last_prompts_are_kept_and_older_ones_deleted(folders: Folders) -> None:
    files = ComfyOutputFiles(folders.by_type, lambda: 100, enabled=True, keep=2)
    prompts = [
        [folders.save("a_00001_.png"), folders.save("a_00002_.png")],
        [folders.save("p_00001_.png", "temp")],
        [folders.save("s_00001_.png", subfolder="sub")],
        [folders.save("a_00003_.png")],
    ]
    done(files, prompts[0], 100)
    done(files, prompts[1], 100)
    assert folders.names() == {"a_00001_.png", "a_00002_.png", "p_00001_.png", "s_00001_.png", "a_00003_.png"}

    done(files, prompts[2], 100)
    assert folders.names() == {"p_00001_.png", "s_00001_.png", "a_00003_.png"}
    done(files, prompts[3], 100)
    assert folders.names() == {"s_00001_.png", "a_00003_.png"}


def test_a_file_a_newer_prompt_reported_again_stays(folders: Folders) -> None:
    # A prompt served from ComfyUI's cache reports the files of the prompt it repeats, under their names.
    files = ComfyOutputFiles(folders.by_type, lambda: 100, enabled=True, keep=1)
    first = [folders.save("a_00001_.png")]
    done(files, first, 100)
    done(files, first, 100)  # the repeat
    assert folders.names() == {"a_00001_.png"}

    done(files, [folders.save("a_00002_.png")], 100)
    assert folders.names() == {"a_00002_.png"}


def test_files_a_job_still_stores_are_not_deleted(folders: Folders) -> None:
    # A repeat of an earlier prompt (served from ComfyUI's cache) reports that prompt's file; while its
    # job stores it, other jobs finish prompts beyond the last kept ones.
    files = ComfyOutputFiles(folders.by_type, lambda: 100, enabled=True, keep=1)
    first = [folders.save("a_00001_.png")]
    done(files, first, 100)
    with files.reported(first, 100):
        done(files, [folders.save("b_00001_.png")], 100)
        done(files, [folders.save("b_00002_.png")], 100)
        assert folders.names() == {"a_00001_.png", "b_00002_.png"}
    assert folders.names() == {"a_00001_.png"}  # the newest kept now


def test_outputs_of_a_comfyui_since_restarted_are_left_alone(folders: Folders) -> None:
    running = {"start": 0}  # (ComfyProcess.restarts)
    files = ComfyOutputFiles(folders.by_type, lambda: running["start"], enabled=True, keep=1)
    done(files, [folders.save("a_00001_.png")], 0)
    running["start"] = 1  # restarted: it numbers its files from 1 again
    new = [folders.save("a_00002_.png")]

    done(files, [folders.save("a_00007_.png")], 0)  # a job that ran on the one before ends late
    assert folders.names() == {"a_00001_.png", "a_00002_.png", "a_00007_.png"}

    # What was kept of the one before is forgotten: its names may be the new one's files now.
    done(files, new, 1)
    done(files, new, 1)
    assert folders.names() == {"a_00001_.png", "a_00002_.png", "a_00007_.png"}
    done(files, [folders.save("a_00003_.png")], 1)
    assert folders.names() == {"a_00001_.png", "a_00003_.png", "a_00007_.png"}


def test_nothing_is_deleted_when_disabled(folders: Folders) -> None:
    files = ComfyOutputFiles(folders.by_type, lambda: 100, enabled=False, keep=1)
    for n in range(3):
        done(files, [folders.save(f"a_0000{n}_.png")], 100)
    assert len(folders.names()) == 3


@pytest.mark.parametrize(
    ("args", "lasting"),
    [
        ((), False),
        (("--preview-method", "auto", "--cache-none"), False),
        (("--cache-classic",), False),
        (("--cache-lru", "10"), True),
        (("--cache-lru=10",), True),
        (("--cache-ram",), True),
        (("--cache-l", "5"), True),  # (ComfyUI's parser takes an unambiguous prefix)
        (("--cache-ra",), True),
        (("--cache-",), False),
    ],
)
def test_a_cache_that_keeps_older_results_is_recognised(args: tuple[str, ...], lasting: bool) -> None:
    assert keeps_older_results(args) is lasting


def test_only_files_inside_comfyui_folders_have_a_path(folders: Folders) -> None:
    base = folders.by_type["output"]
    assert (
        output_path(folders.by_type, OutputFile("9", "a.png", "sub/dir", "output")) == base / "sub/dir/a.png"
    )
    assert output_path(folders.by_type, OutputFile("9", "a.png", "..", "output")) is None
    assert output_path(folders.by_type, OutputFile("9", "a.png", "/etc", "output")) is None
    assert output_path(folders.by_type, OutputFile("9", "a.png", "", "input")) is None
    assert output_path(folders.by_type, OutputFile("9", "t.txt", "", "text", text="hi")) is None
