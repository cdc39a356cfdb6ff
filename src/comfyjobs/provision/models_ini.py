"""`models.ini`: which model files to fetch, from where, into which ComfyUI model folder.

    [checkpoints]
    _ = https://huggingface.co/ORG/REPO/resolve/main/model.safetensors sha256=<64 hex>
    sdxl-base = hf://ORG/REPO/sd_xl_base_1.0.safetensors@v1.0

Sections are model folders; `_ =` keeps the file's own name, `name =` renames it (the source's extension is
added unless `name` already ends with it). A small line parser rather than configparser: configparser
lowercases keys and keeps only the last of repeated keys, and both are meaningful here (file names keep
their case; every `_ =` line is an entry). Every problem in the file is reported at once, with its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlsplit

from comfyjobs.errors import ModelsIniError, ModelsIniProblem
from comfyjobs.manifests.schema import MODEL_FOLDERS

KEEP_NAME = "_"
DEFAULT_REVISION = "main"
HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})

RepoType = Literal["model", "dataset", "space"]
# URL path prefixes (web URLs and hf://) that name a repository type other than a model.
_REPO_TYPE_PREFIXES: dict[str, RepoType] = {"datasets": "dataset", "spaces": "space"}

_SECTION = re.compile(r"^\[(?P<name>[^\]]*)\]$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HfSource:
    """A file in a Hugging Face repository, fetched with huggingface_hub (its cache, token and resume)."""

    repo_id: str
    path_in_repo: str
    revision: str = DEFAULT_REVISION
    repo_type: RepoType = "model"

    def __str__(self) -> str:
        prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[self.repo_type]
        return f"hf://{prefix}{self.repo_id}@{self.revision}/{self.path_in_repo}"


@dataclass(frozen=True)
class UrlSource:
    """Any other http(s) URL, fetched with a plain resumable GET."""

    url: str

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class ModelEntry:
    folder: str  # a ComfyUI model folder, e.g. "checkpoints"
    filename: str  # relative to the folder; may contain "/" for a sub-folder
    source: HfSource | UrlSource
    sha256: str | None  # lowercase hex
    line: int

    @property
    def target(self) -> str:
        return f"{self.folder}/{self.filename}"


class _EntryError(ValueError):
    """A problem with one entry's value; becomes a ModelsIniProblem at that line."""


def parse_models_ini(path: Path) -> list[ModelEntry]:
    """Reads and checks ``path``; raises ModelsIniError listing every problem (file:line: reason)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsIniError([ModelsIniProblem(str(path), None, f"cannot read: {exc}")]) from exc
    return parse_models_ini_text(text, source_name=str(path))


def parse_models_ini_text(text: str, *, source_name: str = "models.ini") -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    problems: list[ModelsIniProblem] = []
    section: str | None = None
    section_ok = False
    seen: dict[tuple[str, str], int] = {}  # (folder, filename) -> line that claimed it first

    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue

        def problem(reason: str, *, at: int = line_no) -> None:
            problems.append(ModelsIniProblem(source_name, at, reason))

        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                problem(f"malformed section header {line!r} (expected [folder])")
                section, section_ok = None, False
                continue
            section = match["name"].strip()
            section_ok = section in MODEL_FOLDERS
            if not section_ok:
                problem(f"unknown model folder [{section}] (known: {', '.join(MODEL_FOLDERS)})")
            continue

        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            problem(f"expected `name = URL` or `_ = URL`, got {line!r}")
            continue
        if section is None:
            problem(f"entry {key!r} is outside any [folder] section")
            continue
        if not section_ok:
            continue  # the section header already has its problem; its entries would only repeat it
        try:
            entry = _parse_entry(section, key, value, line_no)
        except _EntryError as exc:
            problem(str(exc))
            continue
        first = seen.setdefault((entry.folder, entry.filename), line_no)
        if first != line_no:
            problem(f"duplicate target {entry.target} (already given at line {first})")
            continue
        entries.append(entry)

    if problems:
        raise ModelsIniError(problems)
    return entries


def _parse_entry(folder: str, key: str, value: str, line_no: int) -> ModelEntry:
    if not key:
        raise _EntryError("missing name before `=` (use `_` to keep the file's own name)")
    tokens = value.split()
    if not tokens:
        raise _EntryError(f"{key!r} has no URL")
    url, options = tokens[0], tokens[1:]

    sha256: str | None = None
    for option in options:
        name, sep, option_value = option.partition("=")
        if name != "sha256" or not sep:
            raise _EntryError(f"unexpected {option!r} after the URL (only sha256=<64 hex digits> may follow)")
        if sha256 is not None:
            raise _EntryError("sha256 given twice")
        if not _SHA256.match(option_value):
            raise _EntryError(f"sha256 must be 64 hex digits, got {option_value!r}")
        sha256 = option_value.lower()

    source = _parse_source(url)
    source_name = _source_filename(source)
    if key == KEEP_NAME:
        filename = source_name
    else:
        extension = PurePosixPath(source_name).suffix
        filename = key if key.lower().endswith(extension.lower()) else key + extension
    _check_relative_name(filename)
    return ModelEntry(folder=folder, filename=filename, source=source, sha256=sha256, line=line_no)


def _parse_source(url: str) -> HfSource | UrlSource:
    """One URL from models.ini: hf://..., a huggingface.co resolve (or blob) URL, or any http(s) URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise _EntryError(f"bad URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise _EntryError(f"not a URL: {url!r} (expected https://, http:// or hf://)")
    if scheme == "hf":
        return _parse_hf_uri(url)
    if scheme not in ("http", "https"):
        raise _EntryError(f"unsupported scheme {scheme}:// in {url!r} (use https://, http:// or hf://)")
    if not parts.hostname:
        raise _EntryError(f"bad URL {url!r}: no host")
    if parts.hostname.lower() in HF_HOSTS:
        return _parse_hf_web_url(url)
    if not parts.path or parts.path.endswith("/"):
        raise _EntryError(f"bad URL {url!r}: its path names no file")
    return UrlSource(url)


def _parse_hf_uri(uri: str) -> HfSource:
    """``hf://[datasets/|spaces/]ORG/REPO[@REV]/path`` (huggingface_hub's own form) or, equally,
    ``hf://ORG/REPO/path@REV`` (revision after the file)."""
    rest = uri[len("hf://") :]
    repo_type: RepoType = "model"
    head, _, tail = rest.partition("/")
    if head in _REPO_TYPE_PREFIXES:
        repo_type, rest = _REPO_TYPE_PREFIXES[head], tail
    segments = rest.split("/")
    if len(segments) < 3 or not all(segments):
        raise _EntryError(f"bad hf:// URL {uri!r} (expected hf://ORG/REPO/path/to/file[@REVISION])")
    org, repo, path = segments[0], segments[1], segments[2:]
    revision: str | None = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    if "@" in path[-1]:
        if revision is not None:
            raise _EntryError(f"bad hf:// URL {uri!r}: revision given twice")
        path[-1], revision = path[-1].rsplit("@", 1)
    if revision == "":
        raise _EntryError(f"bad hf:// URL {uri!r}: empty revision after '@'")
    return _hf_source(uri, org, repo, path, revision or DEFAULT_REVISION, repo_type)


def _parse_hf_web_url(url: str) -> HfSource:
    """``https://huggingface.co/[datasets/|spaces/]ORG/REPO/resolve/REV/path`` (``/blob/`` is accepted too: it
    is the same file's web page, and what a browser's address bar shows)."""
    segments = [unquote(s) for s in urlsplit(url).path.strip("/").split("/")]
    repo_type: RepoType = "model"
    if segments and segments[0] in _REPO_TYPE_PREFIXES:
        repo_type, segments = _REPO_TYPE_PREFIXES[segments[0]], segments[1:]
    for marker_at in (1, 2):  # "name/resolve/…" (a repo without an org, e.g. gpt2) or "org/name/resolve/…"
        if len(segments) > marker_at + 2 and segments[marker_at] in ("resolve", "blob"):
            repo_parts = segments[:marker_at]
            revision, path = segments[marker_at + 1], segments[marker_at + 2 :]
            org, repo = (repo_parts[0], repo_parts[1]) if marker_at == 2 else ("", repo_parts[0])
            return _hf_source(url, org, repo, path, revision, repo_type)
    raise _EntryError(
        f"bad Hugging Face URL {url!r} (expected https://huggingface.co/ORG/REPO/resolve/REVISION/path/to/file)"
    )


def _hf_source(
    url: str, org: str, repo: str, path: list[str], revision: str, repo_type: RepoType
) -> HfSource:
    for part in (org, repo) if org else (repo,):
        if not _REPO_PART.match(part):
            raise _EntryError(f"bad repository name {part!r} in {url!r}")
    if not path or not all(path) or any(p in (".", "..") for p in path):
        raise _EntryError(f"bad file path in {url!r}")
    repo_id = f"{org}/{repo}" if org else repo
    return HfSource(repo_id=repo_id, path_in_repo="/".join(path), revision=revision, repo_type=repo_type)


def _source_filename(source: HfSource | UrlSource) -> str:
    if isinstance(source, HfSource):
        return source.path_in_repo.rsplit("/", 1)[-1]
    return unquote(urlsplit(source.url).path).rsplit("/", 1)[-1]


def _check_relative_name(name: str) -> None:
    """A target name stays inside its folder: sub-folders with "/" are fine, escaping or hiding is not."""
    parts = name.split("/")
    if "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise _EntryError(f"bad target name {name!r} (a file name, optionally with sub-folders: sdxl/base)")
    if any(p.startswith(".") for p in parts):
        # ComfyUI (and our model listing) skips hidden files, so the model would never be offered.
        raise _EntryError(f"bad target name {name!r}: names starting with '.' are hidden from ComfyUI")
