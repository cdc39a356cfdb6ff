"""`models download` glue: parse models.ini, fetch, print a summary, turn the outcome into an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from comfyjobs.cli import exit_codes
from comfyjobs.errors import ModelsIniError
from comfyjobs.provision.downloads import DownloadResult, download_models
from comfyjobs.provision.models_ini import parse_models_ini

_STATUS_STYLES = {"downloaded": "green", "present": "cyan", "failed": "bold red"}


def print_summary(results: Sequence[DownloadResult], console: Console | None = None) -> int:
    """Prints one row per entry (folder, file, status, size, reason); returns how many failed."""
    console = console or Console()
    table = Table(title="models")
    for column in ("folder", "file", "status", "size", "reason"):
        table.add_column(column, justify="right" if column == "size" else "left", overflow="fold")
    for result in results:
        table.add_row(
            result.entry.folder,
            result.entry.filename,
            f"[{_STATUS_STYLES[result.status]}]{result.status}[/]",
            decimal(result.size_bytes) if result.size_bytes is not None else "-",
            result.reason or "",
        )
    console.print(table)
    return sum(1 for r in results if not r.ok)


def run_models_download(ini_path: Path, model_dir: Path, *, allow_missing: bool, hf_token: str | None) -> int:
    """0: every model in place (or some missing and ``allow_missing``); 1: some missing; 3: invalid
    models.ini (its problems printed to stderr)."""
    try:
        entries = parse_models_ini(ini_path)
    except ModelsIniError as exc:
        print(f"comfyjobs: {exc.message}", file=sys.stderr)
        return exit_codes.CONFIG
    if not entries:
        print(f"{ini_path}: no models listed, nothing to download")
        return exit_codes.OK

    results = download_models(entries, model_dir, hf_token=hf_token)
    failures = print_summary(results)
    if not failures:
        return exit_codes.OK
    if allow_missing:
        print(f"{failures} model(s) missing; going on without them (--allow-missing)", file=sys.stderr)
        return exit_codes.OK
    return exit_codes.ERROR
