"""Adds entries to (and removes one from) a top-level mapping of a hand-written YAML file, as text.

Manifests are written by people, with comments and a layout that mean something to them; a round trip
through a YAML library would drop the comments and reflow the rest. So new entries are emitted as a block
in the file's own indentation and spliced in at the end of the mapping, and every edit is checked by
loading the result: the mapping must hold exactly the old entries plus (or minus) the edited ones, and
nothing else in the file may change. A file we cannot edit that way (the mapping in flow style, say)
raises ValueError and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

DEFAULT_INDENT = 2


def flow(value: Any) -> str:
    """One value in YAML flow style, on one line: `'3'`, `1.0`, `[a, b]`, `{node: '3', input: seed}`."""
    dumped = yaml.safe_dump(
        [value], default_flow_style=True, sort_keys=False, width=1 << 30, allow_unicode=True
    )
    return dumped.strip()[1:-1]


def emit_block(entries: Mapping[str, Any], indent: int, unit: int) -> list[str]:
    """Block-style lines for a mapping at column ``indent``; a list of mappings becomes one flow mapping per
    item (`- {node: '3', input: seed}`, as the shipped manifests write targets), other lists one flow list."""
    pad = " " * indent
    lines: list[str] = []
    for key, value in entries.items():
        name = flow(key)
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{name}:")
            lines += emit_block(value, indent + unit, unit)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{name}:")
            lines += [f"{pad}{' ' * unit}- {flow(item)}" for item in value]
        else:
            lines.append(f"{pad}{name}: {flow(value)}")
    return lines


def _top_key_line(lines: list[str], top_key: str) -> int | None:
    pattern = re.compile(rf"^(['\"]?){re.escape(top_key)}\1\s*:(.*)$")
    for i, line in enumerate(lines):
        if pattern.match(line.rstrip("\n")):
            return i
    return None


def _after_colon(line: str) -> str:
    rest = line.rstrip("\n").split(":", 1)[1].strip()
    return "" if rest.startswith("#") else rest.split(" #", 1)[0].strip()


def _block_end(lines: list[str], start: int) -> int:
    """Index of the first line after the mapping opened at ``start``: the next line at column 0."""
    for j in range(start + 1, len(lines)):
        line = lines[j]
        if line.strip() and line[0] not in " \t#":
            return j
    return len(lines)


def _child_indent(lines: list[str], start: int, end: int) -> int | None:
    for line in lines[start + 1 : end]:
        stripped = line.lstrip(" ")
        if stripped.strip() and not stripped.startswith("#"):
            return len(line) - len(stripped)
    return None


def _load_mapping(text: str, top_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    data = yaml.safe_load(text) if text.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("the file is not a YAML mapping")
    inner = data.get(top_key) or {}
    if not isinstance(inner, dict):
        raise ValueError(f"`{top_key}` is not a mapping")
    return data, inner


def _check(new_text: str, top_key: str, old_data: dict[str, Any], expected: dict[str, Any]) -> str:
    try:
        new_data, inner = _load_mapping(new_text, top_key)
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"editing the file as text would break it ({exc})") from None
    others_old = {k: v for k, v in old_data.items() if k != top_key}
    others_new = {k: v for k, v in new_data.items() if k != top_key}
    if inner != expected or others_new != others_old:
        raise ValueError(
            f"cannot edit `{top_key}` as text without changing what the file says; edit it by hand"
        )
    return new_text


def append_entries(text: str, top_key: str, entries: Mapping[str, Any], *, comment: str = "") -> str:
    """``text`` with ``entries`` added at the end of the top-level mapping ``top_key`` (created when
    missing), preceded by a blank line and ``comment`` (one line, without '#')."""
    old_data, old_inner = _load_mapping(text, top_key)
    if clash := sorted(set(entries) & set(old_inner)):
        raise ValueError(f"`{top_key}` has {', '.join(clash)} already")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = _top_key_line(lines, top_key)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("\n")
        lines.append(f"{top_key}:\n")
        start = len(lines) - 1
    rest = _after_colon(lines[start])
    if rest in ("{}", "null", "~"):
        lines[start] = f"{top_key}:\n"
    elif rest:
        raise ValueError(f"`{top_key}` is written in flow style; add the entries by hand")
    end = _block_end(lines, start)
    unit = _child_indent(lines, start, end) or DEFAULT_INDENT
    # Comments and blank lines at column 0 before the next key introduce that key: insert above them.
    at = end
    while at > start + 1 and (not lines[at - 1].strip() or lines[at - 1].startswith("#")):
        at -= 1
    block = ["\n"] if at > start + 1 else []
    if comment:
        block.append(f"{' ' * unit}# {comment}\n")
    block += [line + "\n" for line in emit_block(entries, unit, unit)]
    new_text = "".join(lines[:at] + block + lines[at:])
    return _check(new_text, top_key, old_data, {**old_inner, **entries})


def remove_entry(text: str, top_key: str, key: str) -> str:
    """``text`` without the entry ``key`` of the top-level mapping ``top_key``: its lines, the comments
    inside it and the comment lines right above it (what ``append_entries`` wrote, or a person did)."""
    old_data, old_inner = _load_mapping(text, top_key)
    if key not in old_inner:
        return text
    lines = text.splitlines(keepends=True)
    start = _top_key_line(lines, top_key)
    if start is None or _after_colon(lines[start]):
        raise ValueError(f"`{top_key}` is not a block mapping; remove {key!r} by hand")
    end = _block_end(lines, start)
    unit = _child_indent(lines, start, end) or DEFAULT_INDENT
    pattern = re.compile(rf"^ {{{unit}}}(['\"]?){re.escape(key)}\1\s*:")
    first = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
    if first is None:
        raise ValueError(f"cannot find the lines of {key!r} in `{top_key}`; remove it by hand")
    last = first + 1
    while last < end and (not lines[last].strip() or len(lines[last]) - len(lines[last].lstrip(" ")) > unit):
        last += 1
    while last > first + 1 and not lines[last - 1].strip():  # leave the blank lines that separate entries
        last -= 1
    # Comment lines right above the key, at its indentation, describe it: they go with it, and so does the
    # blank line that introduced it.
    while first > start + 1 and lines[first - 1].startswith(" " * unit + "#"):
        first -= 1
    if first > start + 1 and not lines[first - 1].strip():
        first -= 1
    new_text = "".join(lines[:first] + lines[last:])
    return _check(new_text, top_key, old_data, {k: v for k, v in old_inner.items() if k != key})
