"""Both clients against the live service (real Redis, worker and ComfyUI on CPU): the smoke txt2img to a
valid PNG on disk; a local picture given as `--param image=@file` through the upscale workflow; the rich
client's live bar seen in a pseudo-terminal; Ctrl-C detaches, never cancels."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import api_client_minimal as cj
import pexpect
from PIL import Image

from tests.clients.conftest import run_client
from tests.conftest import REPO
from tests.integration.conftest import Service
from tests.media_files import png
from tests.support import JobEvents

SMOKE = ["--param", "prompt=a red fox", "--param", "steps=4", "--param", "width=128", "--param", "height=128"]
ESC = r"\x1b\[[0-9;]*m"
ANSI = rf"(?:{ESC})*"  # rich styles the id
TASK_ID = re.compile(rf"task {ANSI}([0-9a-f]{{32}})")


def assert_png(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as img:
        img.load()
        assert (img.format, img.size) == ("PNG", size)


def spawn_rich(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        [str(REPO / "api_client.py"), *args],
        dimensions=(40, 140),
        encoding="utf-8",
        timeout=240,
        cwd=str(REPO),
    )


def test_minimal_client_runs_the_smoke_workflow(service: Service, tmp_path: Path) -> None:
    result = run_client(
        "api_client_minimal.py", "run", "txt2img", *SMOKE, "--server", service.url, "--out", str(tmp_path),
        timeout_s=300,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    # Plain progress lines. Each long poll answers with the job as it is then, so a line per step is not
    # promised (steps can land between two answers); the steps shown only go up.
    steps = [int(n) for n in re.findall(r"PROGRESS: KSampler (\d)/4", result.stderr)]
    assert steps and steps == sorted(steps), result.stderr
    assert result.stderr.rstrip().endswith("SUCCESS")
    (saved,) = [Path(line) for line in result.stdout.splitlines()]
    assert saved.parent.parent == tmp_path
    assert_png(saved, (128, 128))


def test_minimal_client_as_a_library(service: Service, tmp_path: Path) -> None:
    task_id = cj.generate("tiny", {"width": 40, "height": 24, "color": 200}, server=service.url)
    task = cj.wait(task_id, timeout_s=120, server=service.url)
    assert task["status"] == "SUCCESS"
    (saved,) = cj.download(task, tmp_path, server=service.url)
    assert_png(saved, (40, 24))


def test_minimal_client_uploads_a_local_picture(service: Service, tmp_path: Path) -> None:
    picture = tmp_path / "navy.png"
    picture.write_bytes(png(40, 24, "navy"))
    out = tmp_path / "out"
    result = run_client(
        "api_client_minimal.py", "run", "upscale", "--param", f"image=@{picture}", "--param", "scale_by=2",
        "--server", service.url, "--out", str(out), timeout_s=300,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "uploaded navy.png -> asset" in result.stderr
    (saved,) = [Path(line) for line in result.stdout.splitlines()]
    assert saved.parent.parent == out and "?" not in saved.name  # named after the output, not its link
    assert_png(saved, (80, 48))


def test_rich_client_uploads_a_local_picture(service: Service, tmp_path: Path) -> None:
    picture = tmp_path / "navy.png"
    picture.write_bytes(png(40, 24, "navy"))
    out = tmp_path / "out"
    child = spawn_rich(
        "run", "upscale", "--param", f"image=@{picture}", "--param", "scale_by=2", "--server", service.url,
        "--out", str(out),
    )  # fmt: skip
    child.expect(rf"uploaded{ANSI} navy\.png → asset")
    child.expect(rf"image(?:\s|{ESC})+navy\.png")  # the request panel names the file
    child.expect(TASK_ID)
    task_id = child.match.group(1)
    child.expect("SUCCESS")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (saved,) = (out / task_id).iterdir()
    assert saved.suffix == ".png"
    assert_png(saved, (80, 48))


def test_rich_client_shows_a_live_bar_and_the_result(service: Service, tmp_path: Path) -> None:
    child = spawn_rich("run", "txt2img", *SMOKE, "--server", service.url, "--out", str(tmp_path))
    child.expect("prompt")  # the request panel
    child.expect(TASK_ID)
    task_id = child.match.group(1)
    # The live bar, redrawn in place as steps arrive (at rich's refresh rate, so not every step shows).
    child.expect(rf"KSampler{ANSI} [^\r]*[1-4]/4{ANSI} steps [^\r]*ETA")
    child.expect("SUCCESS")  # the result panel
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (saved,) = (tmp_path / task_id).iterdir()
    assert_png(saved, (128, 128))


def test_rich_client_ctrl_c_detaches_and_the_job_goes_on(
    service: Service, events: JobEvents, tmp_path: Path
) -> None:
    longer = [
        "--param",
        "prompt=a slow fox",
        "--param",
        "steps=12",
        "--param",
        "width=128",
        "--param",
        "height=128",
    ]
    child = spawn_rich("run", "txt2img", *longer, "--server", service.url, "--out", str(tmp_path))
    child.expect(TASK_ID)
    task_id = child.match.group(1)
    child.expect(r"KSampler")
    child.sendintr()
    child.expect("detached")
    child.expect(f"status {task_id}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == cj.EXIT_INTERRUPTED
    assert events.wait_terminal(task_id, 240) == "SUCCESS"  # not cancelled
    assert not any(tmp_path.iterdir())  # and nothing was downloaded: the client had left


def test_rich_client_asks_what_to_run(service: Service, tmp_path: Path) -> None:
    child = spawn_rich("--server", service.url, "--out", str(tmp_path))
    child.expect("Workflows")  # the tables first
    child.expect("LoRAs")
    child.expect(rf"workflow {ANSI}\[txt2img/tiny/[^\]]*\]")  # every shipped workflow
    child.sendline("tiny")
    child.expect("tiny parameters")
    for name, answer in (("width", "48"), ("height", ""), ("batch_size", ""), ("color", "12")):
        child.expect(rf"{name}.*:")
        child.sendline(answer)
    child.expect("queue it")
    child.sendline("y")
    child.expect(TASK_ID)
    task_id = child.match.group(1)
    child.expect("SUCCESS")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (saved,) = (tmp_path / task_id).iterdir()
    assert_png(saved, (48, 64))
