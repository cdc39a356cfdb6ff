"""custom_nodes.txt parsing, and installing nodes from real local git repositories into a throwaway venv.

Nothing here reaches the network: nodes are cloned from repositories made in tmp_path, and requirements
resolve against a folder of tiny hand-made wheels (fake `six` and `torch`) with every index switched off.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console

from comfyjobs.errors import CustomNodesFileError
from comfyjobs.provision.custom_nodes import (
    CustomNodeEntry,
    NodeInstallResult,
    install_custom_nodes,
    install_requirements,
    parse_custom_nodes,
    parse_custom_nodes_text,
    print_summary,
    run_nodes_install,
)

REPO = Path(__file__).resolve().parents[2]
TORCH_CONSTRAINTS = REPO / "install" / "constraints.txt"


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's git config (insteadOf rewrites, credential helpers) must not change what is tested."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


# --- parsing ---------------------------------------------------------------------------------------


def parse(text: str, base_dir: Path = Path("/base")) -> list[CustomNodeEntry]:
    return parse_custom_nodes_text(text, source_name="nodes.txt", base_dir=base_dir)


def problems(text: str) -> list[str]:
    with pytest.raises(CustomNodesFileError) as info:
        parse(text)
    assert info.value.code == "custom_nodes_invalid"
    return [str(p) for p in info.value.problems]


def test_urls_pins_and_folder_names() -> None:
    entries = parse(
        "# header comment\n"
        "\n"
        "https://github.com/org/ComfyUI-Foo.git@v1.2.0\n"
        "   https://github.com/org/repo@0123abc   # inline comment\n"
        "https://github.com/org/Unpinned\n"
        "https://github.com/org/branchy/@release/2.x\n"
        "git@github.com:org/Scp-Node.git@" + "a" * 40 + "\n"
        "ssh://git@example.com:2222/org/ssh_node.git\n"
        "https://user@example.com/org/with-user.git@main\n"
    )

    assert [(e.name, e.url, e.pin, e.line) for e in entries] == [
        ("ComfyUI-Foo", "https://github.com/org/ComfyUI-Foo.git", "v1.2.0", 3),
        ("repo", "https://github.com/org/repo", "0123abc", 4),
        ("Unpinned", "https://github.com/org/Unpinned", None, 5),
        ("branchy", "https://github.com/org/branchy/", "release/2.x", 6),
        ("Scp-Node", "git@github.com:org/Scp-Node.git", "a" * 40, 7),
        ("ssh_node", "ssh://git@example.com:2222/org/ssh_node.git", None, 8),
        ("with-user", "https://user@example.com/org/with-user.git", "main", 9),
    ]


def test_local_paths_and_file_urls(tmp_path: Path) -> None:
    entries = parse(
        f"{tmp_path}/nodes/abs-node@v1\n./rel-node\n../up/other.git@deadbeef\nfile:///srv/git/served.git@v2\n",
        base_dir=tmp_path / "configs",
    )

    assert [(e.name, e.url, e.pin) for e in entries] == [
        ("abs-node", str(tmp_path / "nodes" / "abs-node"), "v1"),
        ("rel-node", str(tmp_path / "configs" / "rel-node"), None),  # relative to the file's folder
        ("other", str(tmp_path / "up" / "other.git"), "deadbeef"),
        ("served", "file:///srv/git/served.git", "v2"),
    ]


def test_every_problem_is_reported_with_its_line() -> None:
    found = problems(
        "https://github.com/org/good\n"
        "# fine\n"
        "github.com/org/no-scheme\n"
        "ftp://example.com/org/repo.git\n"
        "https://github.com/org/repo@-evil\n"
        "https://github.com/org/repo@bad..ref\n"
        "https://github.com/org/two words\n"
        "https://github.com/\n"
        "https://github.com/other/GOOD.git@v1\n"
        "https://example.com\n"
    )

    assert found == [
        "nodes.txt:3: not a git URL or path: 'github.com/org/no-scheme' (expected https://host/org/repo[.git]"
        "[@pin], git@host:org/repo[@pin], file://... or a local path)",
        "nodes.txt:4: unsupported scheme in 'ftp://example.com/org/repo.git'"
        " (use https, http, ssh, git or file)",
        "nodes.txt:5: bad pin '-evil' (expected a commit of 7-40 hex digits, a tag or a branch)",
        "nodes.txt:6: bad pin 'bad..ref' (expected a commit of 7-40 hex digits, a tag or a branch)",
        "nodes.txt:7: expected one URL or path per line, got 'https://github.com/org/two words'",
        "nodes.txt:8: cannot take a folder name from 'https://github.com/' (got '')",
        "nodes.txt:9: duplicate folder name 'GOOD' (already given at line 1)",
        "nodes.txt:10: 'https://example.com' names no repository",
    ]


def test_unreadable_file_is_one_problem_without_a_line(tmp_path: Path) -> None:
    with pytest.raises(CustomNodesFileError) as info:
        parse_custom_nodes(tmp_path / "missing.txt")
    [problem] = info.value.problems
    assert problem.line is None
    assert str(problem).startswith(f"{tmp_path / 'missing.txt'}: cannot read:")


def test_the_shipped_file_lists_nothing() -> None:
    shipped = REPO / "install" / "configs" / "custom_nodes.txt"
    assert parse_custom_nodes(shipped) == []
    assert "@" in shipped.read_text(encoding="utf-8")  # it documents pins with a commented-out example


# --- local git repositories ------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def node_source(version: str) -> str:
    return f'NODE_CLASS_MAPPINGS = {{"Tiny{version}": object}}\nVERSION = "{version}"\n'


@dataclass(frozen=True)
class NodeRepo:
    path: Path
    v1: str  # the commit tagged v1
    v2: str  # the commit after it: main's head


def make_node_repo(root: Path, name: str = "ComfyUI-Tiny", requirements: str = "six\n") -> NodeRepo:
    path = root / name
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "__init__.py").write_text(node_source("V1"), encoding="utf-8")
    (path / "requirements.txt").write_text(requirements, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "one")
    git(path, "tag", "v1")
    v1 = git(path, "rev-parse", "HEAD")
    (path / "__init__.py").write_text(node_source("V2"), encoding="utf-8")
    git(path, "commit", "--quiet", "-am", "two")
    return NodeRepo(path, v1, git(path, "rev-parse", "HEAD"))


@pytest.fixture
def node_repo(tmp_path: Path) -> NodeRepo:
    return make_node_repo(tmp_path / "upstream")


@dataclass
class RecordingPip:
    """A PipRunner that installs nothing and remembers what it was asked."""

    fail_with: str | None = None
    calls: list[tuple[Path, Path, list[Path]]] = field(default_factory=list)

    def __call__(self, requirements: Path, *, python: Path, constraints: Sequence[Path]) -> str | None:
        self.calls.append((requirements, python, list(constraints)))
        return self.fail_with


class Installer:
    """install_custom_nodes against one ComfyUI folder, with a recording pip."""

    def __init__(self, comfyui_dir: Path) -> None:
        self.comfyui_dir = comfyui_dir
        self.pip = RecordingPip()

    def __call__(self, text: str) -> list[NodeInstallResult]:
        entries = parse(text, base_dir=self.comfyui_dir.parent)
        return install_custom_nodes(
            entries,
            self.comfyui_dir,
            python=Path("/venv/bin/python"),
            constraints=[TORCH_CONSTRAINTS],
            pip_runner=self.pip,
        )

    def one(self, text: str) -> NodeInstallResult:
        [result] = self(text)
        return result


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path / "ComfyUI")


def installed_version(node: Path) -> str:
    return (node / "__init__.py").read_text(encoding="utf-8").rsplit('VERSION = "', 1)[1].split('"')[0]


def test_pinned_to_a_tag_checks_out_the_tag_not_head(install: Installer, node_repo: NodeRepo) -> None:
    result = install.one(f"{node_repo.path}@v1\n")

    node = install.comfyui_dir / "custom_nodes" / "ComfyUI-Tiny"
    assert (result.status, result.path, result.commit, result.reason) == (
        "installed",
        node,
        node_repo.v1,
        None,
    )
    assert installed_version(node) == "V1"
    assert git(node, "rev-parse", "HEAD") == node_repo.v1
    # Requirements go to the given interpreter, under the given constraints.
    assert install.pip.calls == [(node / "requirements.txt", Path("/venv/bin/python"), [TORCH_CONSTRAINTS])]
    # The clone was made beside ComfyUI and moved in whole: nothing else is left behind.
    assert sorted(p.name for p in install.comfyui_dir.iterdir()) == ["custom_nodes"]


def test_rerun_is_present_and_a_new_pin_updates(install: Installer, node_repo: NodeRepo) -> None:
    node = install.comfyui_dir / "custom_nodes" / "ComfyUI-Tiny"
    assert install.one(f"{node_repo.path}@v1").status == "installed"

    again = install.one(f"{node_repo.path}@v1")
    assert (again.status, again.commit) == ("present", node_repo.v1)
    assert len(install.pip.calls) == 2  # requirements checked every run

    updated = install.one(f"{node_repo.path}@{node_repo.v2}")
    assert (updated.status, updated.commit) == ("updated", node_repo.v2)
    assert installed_version(node) == "V2"

    assert install.one(f"{node_repo.path}@{node_repo.v2[:7]}").status == "present"  # a short hash too
    back = install.one(f"{node_repo.path}@v1")
    assert (back.status, installed_version(node)) == ("updated", "V1")


def test_a_branch_pin_follows_new_upstream_commits(install: Installer, node_repo: NodeRepo) -> None:
    first = install.one(f"{node_repo.path}@main")
    assert (first.status, first.commit) == ("installed", node_repo.v2)
    assert install.one(f"{node_repo.path}@main").status == "present"

    (node_repo.path / "__init__.py").write_text(node_source("V3"), encoding="utf-8")
    git(node_repo.path, "commit", "--quiet", "-am", "three")
    v3 = git(node_repo.path, "rev-parse", "HEAD")

    later = install.one(f"{node_repo.path}@main")
    assert (later.status, later.commit) == ("updated", v3)
    assert installed_version(later.path) == "V3"


def test_a_commit_fetched_later_and_a_tag_added_later(install: Installer, node_repo: NodeRepo) -> None:
    assert install.one(f"{node_repo.path}@v1").status == "installed"
    (node_repo.path / "__init__.py").write_text(node_source("V3"), encoding="utf-8")
    git(node_repo.path, "commit", "--quiet", "-am", "three")
    git(node_repo.path, "tag", "v3")
    v3 = git(node_repo.path, "rev-parse", "HEAD")

    by_hash = install.one(f"{node_repo.path}@{v3}")  # unknown to the clone until fetched
    assert (by_hash.status, by_hash.commit) == ("updated", v3)
    assert install.one(f"{node_repo.path}@v1").status == "updated"
    by_tag = install.one(f"{node_repo.path}@v3")
    assert (by_tag.status, by_tag.commit) == ("updated", v3)


def test_unpinned_takes_the_default_branch_and_then_stays(install: Installer, node_repo: NodeRepo) -> None:
    first = install.one(str(node_repo.path))
    assert (first.status, first.commit) == ("installed", node_repo.v2)
    git(node_repo.path, "commit", "--quiet", "--allow-empty", "-m", "three")

    assert install.one(f"file://{node_repo.path}").status == "present"  # the same source, spelled as a URL
    assert git(first.path, "rev-parse", "HEAD") == node_repo.v2


def test_unknown_pin_fails_and_leaves_nothing(install: Installer, node_repo: NodeRepo) -> None:
    result = install.one(f"{node_repo.path}@v9")

    assert result.status == "failed"
    assert result.reason == f"pin 'v9' not found in {node_repo.path}"
    assert list((install.comfyui_dir / "custom_nodes").iterdir()) == []
    assert sorted(p.name for p in install.comfyui_dir.iterdir()) == ["custom_nodes"]
    assert install.pip.calls == []


def test_unknown_pin_on_an_existing_checkout_keeps_it(install: Installer, node_repo: NodeRepo) -> None:
    install.one(f"{node_repo.path}@v1")

    result = install.one(f"{node_repo.path}@{'0' * 40}")

    assert (result.status, result.reason) == ("failed", f"pin '{'0' * 40}' not found in {node_repo.path}")
    assert installed_version(result.path) == "V1"


def test_a_folder_that_is_not_a_git_checkout_is_left_alone(install: Installer, node_repo: NodeRepo) -> None:
    mine = install.comfyui_dir / "custom_nodes" / "ComfyUI-Tiny"
    mine.mkdir(parents=True)
    (mine / "__init__.py").write_text("# hand-made\n", encoding="utf-8")

    result = install.one(f"{node_repo.path}@v1")

    assert result.status == "failed"
    assert result.reason is not None and "is not a git checkout" in result.reason
    assert [p.name for p in mine.iterdir()] == ["__init__.py"]
    assert (mine / "__init__.py").read_text(encoding="utf-8") == "# hand-made\n"


def test_a_clone_of_another_repository_is_left_alone(install: Installer, tmp_path: Path) -> None:
    make_node_repo(tmp_path / "fork-a", name="Node")
    other = make_node_repo(tmp_path / "fork-b", name="Node")
    assert install.one(f"{tmp_path / 'fork-a' / 'Node'}@v1").status == "installed"

    result = install.one(f"{other.path}@v1")

    assert result.status == "failed"
    assert result.reason is not None and f"is a clone of {tmp_path / 'fork-a' / 'Node'}" in result.reason


def test_unreachable_remote_fails_fast_and_the_others_still_install(
    install: Installer, node_repo: NodeRepo
) -> None:
    dead, good = install(f"https://127.0.0.1:9/x.git@v1\n{node_repo.path}@v1\n")

    assert dead.status == "failed"
    assert dead.reason is not None and dead.reason.startswith("git clone failed")
    assert "127.0.0.1" in dead.reason
    assert not dead.path.exists()
    assert (good.status, good.commit) == ("installed", node_repo.v1)


def test_requirements_failure_fails_the_node_but_keeps_its_checkout(
    install: Installer, node_repo: NodeRepo
) -> None:
    install.pip.fail_with = "installing requirements.txt failed (exit 1): no"

    result = install.one(f"{node_repo.path}@v1")

    assert (result.status, result.commit) == ("failed", node_repo.v1)
    assert result.reason == "installing requirements.txt failed (exit 1): no"
    assert installed_version(result.path) == "V1"


def test_summary_lists_every_node_and_counts_failures(install: Installer, node_repo: NodeRepo) -> None:
    results = install(f"{node_repo.path}@v1\nhttps://127.0.0.1:9/dead.git\n")
    out = io.StringIO()

    assert print_summary(results, Console(file=out, width=250)) == 1
    text = out.getvalue()
    assert "ComfyUI-Tiny" in text and node_repo.v1[:10] in text and "installed" in text
    assert "dead" in text and "failed" in text


def test_summary_shows_brackets_in_reasons_as_written(tmp_path: Path) -> None:
    """pip prints "[notice]", and a reason may quote "[@pin]": not rich markup, shown as written."""
    entry = parse("https://example.com/org/node@v1")[0]
    odd = NodeInstallResult(entry, "failed", tmp_path, None, "bad [@pin] [/x] [bold]")
    out = io.StringIO()

    print_summary([odd], Console(file=out, width=250))

    assert "bad [@pin] [/x] [bold]" in out.getvalue()


# --- requirements into a throwaway venv ------------------------------------------------------------


def build_wheel(folder: Path, name: str, version: str) -> None:
    """A minimal valid pure-Python wheel: a package that only knows its version."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@dataclass(frozen=True)
class Venv:
    python: Path
    installer: str  # "pip" or "uv": which one install_requirements will pick for this venv


def version_in(venv: Venv, dist: str) -> str | None:
    probe = f"import importlib.metadata as m\ntry: print(m.version({dist!r}))\nexcept Exception: pass"
    out = subprocess.run([str(venv.python), "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.strip() or None


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    for name, version in [("six", "1.16.0"), ("six", "1.17.0"), ("torch", "2.0.0"), ("torch", "2.15.0")]:
        build_wheel(folder, name, version)
    return folder


@pytest.fixture(scope="module", params=["pip", "uv", "uv-on-path"])
def venv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, wheels: Path
) -> Iterator[Venv]:
    """A venv holding the (fake) torch that install/constraints.txt pins. "pip": a plain venv, with pip;
    "uv": no pip, a uv next to its python (what install.sh sets up); "uv-on-path": no pip, no uv beside it
    (a venv made by uv), so only the uv on PATH can install into it."""
    root = tmp_path_factory.mktemp(f"venv-{request.param}")
    python = root / "venv" / "bin" / "python"
    uv = shutil.which("uv")
    if request.param != "pip" and uv is None:
        pytest.skip("uv is not installed")
    with pytest.MonkeyPatch.context() as mp:
        offline_index(mp, wheels, root)
        if request.param == "pip":
            subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            subprocess.run([*pip, "torch==2.15.0"], check=True)
        else:
            assert uv is not None
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
            if request.param == "uv":
                (python.parent / "uv").write_text(f'#!/bin/sh\nexec "{uv}" "$@"\n', encoding="utf-8")
                (python.parent / "uv").chmod(0o755)
            uv_pip = [uv, "pip", "install", "--quiet", "--python", str(python)]
            subprocess.run([*uv_pip, "torch==2.15.0"], check=True)
        yield Venv(python, "pip" if request.param == "pip" else "uv")


def offline_index(mp: pytest.MonkeyPatch, wheels: Path, root: Path) -> None:
    """pip and uv see only the wheels folder: no index, no user config, a private cache."""
    mp.setenv("PIP_CONFIG_FILE", os.devnull)
    mp.setenv("PIP_NO_INDEX", "1")
    mp.setenv("PIP_FIND_LINKS", str(wheels))
    uv_toml = root / "uv.toml"
    uv_toml.write_text(f'no-index = true\nfind-links = ["{wheels}"]\n', encoding="utf-8")
    mp.setenv("UV_CONFIG_FILE", str(uv_toml))
    mp.setenv("UV_CACHE_DIR", str(root / "uv-cache"))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, wheels: Path, tmp_path: Path) -> None:
    offline_index(monkeypatch, wheels, tmp_path)


@pytest.fixture
def six_pin(tmp_path: Path) -> Path:
    path = tmp_path / "six-constraints.txt"
    path.write_text("six==1.16.0\n", encoding="utf-8")
    return path


def install_with_requirements(
    tmp_path: Path, venv: Venv, requirements: str, six_pin: Path
) -> NodeInstallResult:
    repo = make_node_repo(tmp_path / "upstream", requirements=requirements)
    [result] = install_custom_nodes(
        parse(f"{repo.path}@v1"),
        tmp_path / "ComfyUI",
        python=venv.python,
        constraints=[TORCH_CONSTRAINTS, six_pin],
    )
    return result


@pytest.mark.usefixtures("offline")
def test_requirements_install_under_the_constraints(venv: Venv, tmp_path: Path, six_pin: Path) -> None:
    result = install_with_requirements(tmp_path, venv, "six\n", six_pin)

    assert (result.status, result.reason) == ("installed", None)
    assert version_in(venv, "six") == "1.16.0"  # 1.17.0 is newer, but the constraint pins 1.16.0


@pytest.mark.usefixtures("offline")
def test_a_requirement_against_a_constraint_fails(venv: Venv, tmp_path: Path, six_pin: Path) -> None:
    before = version_in(venv, "six")

    result = install_with_requirements(tmp_path, venv, "six==1.17.0\n", six_pin)

    assert result.status == "failed"
    assert result.reason is not None and "six" in result.reason
    assert result.reason.startswith("installing requirements.txt failed")
    # Which installer ran shows in its words: the one expected for this venv.
    assert ("ResolutionImpossible" if venv.installer == "pip" else "No solution found") in result.reason
    assert version_in(venv, "six") == before
    assert installed_version(result.path) == "V1"  # the code is in place; only its requirements failed


@pytest.mark.usefixtures("offline")
def test_a_node_cannot_replace_torch(venv: Venv, tmp_path: Path, six_pin: Path) -> None:
    result = install_with_requirements(tmp_path, venv, "torch==2.0.0\n", six_pin)

    assert result.status == "failed"
    assert result.reason is not None and "torch" in result.reason
    assert version_in(venv, "torch") == "2.15.0"


def test_no_installer_at_all_is_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    (tmp_path / "requirements.txt").write_text("six\n", encoding="utf-8")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no uv to be found

    reason = install_requirements(tmp_path / "requirements.txt", python=python, constraints=[])

    assert reason == f"cannot install requirements.txt: no uv next to {python}, no pip in it, no uv on PATH"


# --- run_nodes_install -----------------------------------------------------------------------------


def write_nodes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom_nodes.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.usefixtures("offline")
def test_run_is_0_when_all_are_in_place_and_1_when_one_failed(
    venv: Venv, tmp_path: Path, six_pin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_node_repo(tmp_path / "upstream")
    good = write_nodes_file(tmp_path, f"{repo.path}@v1\n")
    comfyui = tmp_path / "ComfyUI"
    comfyui.mkdir()

    assert run_nodes_install(good, comfyui, python=venv.python, constraints=[TORCH_CONSTRAINTS, six_pin]) == 0
    assert "installed" in capsys.readouterr().out

    bad = write_nodes_file(tmp_path, f"{repo.path}@v1\nhttps://127.0.0.1:9/gone.git\n")
    assert run_nodes_install(bad, comfyui, python=venv.python, constraints=[TORCH_CONSTRAINTS, six_pin]) == 1
    out = capsys.readouterr().out
    assert "present" in out and "failed" in out


def test_run_is_3_for_an_invalid_file_or_missing_constraints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    invalid = write_nodes_file(tmp_path, "# ok\nnot-a-url\n")
    assert run_nodes_install(invalid, tmp_path / "ComfyUI", python=Path(sys.executable), constraints=[]) == 3
    assert f"{invalid}:2: not a git URL or path" in capsys.readouterr().err

    empty = write_nodes_file(tmp_path, "# nothing yet\n")
    missing = tmp_path / "no-constraints.txt"
    assert (
        run_nodes_install(empty, tmp_path / "ComfyUI", python=Path(sys.executable), constraints=[missing])
        == 3
    )
    assert f"constraints file(s) not found: {missing}" in capsys.readouterr().err

    good = write_nodes_file(tmp_path, "/srv/some-node@v1\n")
    assert run_nodes_install(good, tmp_path / "ComfyUI", python=Path(sys.executable), constraints=[]) == 3
    assert f"ComfyUI folder not found: {tmp_path / 'ComfyUI'}" in capsys.readouterr().err
    assert not (tmp_path / "ComfyUI").exists()

    empty = write_nodes_file(tmp_path, "# nothing yet\n")
    assert run_nodes_install(empty, tmp_path / "ComfyUI", python=Path(sys.executable), constraints=[]) == 0
    assert "nothing to install" in capsys.readouterr().out
