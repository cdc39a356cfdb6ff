#!/usr/bin/env python3
"""The comfyjobs terminal client: tables, a request summary, a live progress bar, a result panel.

    python api_client.py                      # interactive: pick a workflow, fill in its parameters
    python api_client.py list                 # workflows (with availability) and LoRAs
    python api_client.py run txt2img --param prompt="a red fox" --param seed=1 --out DIR
    python api_client.py run img2img --param image=@photo.png --param prompt="a red fox"
    python api_client.py status TASK_ID [--follow]

Options: --server URL (or COMFYJOBS_SERVER), --api-key KEY (or COMFYJOBS_API_KEY), --json (machine
output on stdout, no live display), --timeout SECONDS (stop waiting; the job goes on).
A media parameter (image, mask, video, audio, file) takes an asset id, an http(s) or data: URL, or
@PATH: a local file, uploaded first (POST /assets) and sent as its asset id. `@@` sends a literal `@`.
Ctrl-C while waiting detaches and prints the task id; it does not cancel the job.

Needs `rich` and `requests`, and api_client_minimal.py beside it (the HTTP layer both clients share);
exit codes are the minimal client's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# The shared HTTP layer lives beside this file; found from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_client_minimal as core
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.prompt import Confirm, Prompt
from rich.table import Table

RECONNECTS = 5  # a dropped events stream is resumed (Last-Event-ID) this many times in a row

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


# --- tables --------------------------------------------------------------------------------------------


def availability_text(found: dict[str, Any] | None) -> str:
    if found is None:
        return "[yellow]unknown[/] (no worker has checked it yet)"
    if found["ready"]:
        return f"[green]ready[/] on {found['workers_ready']} worker(s)"
    missing = found["missing_nodes"] + found["missing_models"] + found["problems"]
    return "[red]unavailable[/]: " + ", ".join(missing)


def workflows_table(workflows: list[dict[str, Any]]) -> Table:
    table = Table(title="Workflows", show_lines=True)
    table.add_column("id", style="bold cyan")
    table.add_column("description")
    table.add_column("availability")
    table.add_column("parameters")
    for wf in workflows:
        params = ", ".join(p["name"] + ("*" if p["required"] else "") for p in wf["parameters"])
        table.add_row(wf["id"], wf["description"], availability_text(wf.get("availability")), params)
    table.caption = "* required"
    return table


def loras_table(loras: list[dict[str, Any]]) -> Table:
    table = Table(title="LoRAs")
    table.add_column("name", style="bold cyan")
    table.add_column("installed")
    table.add_column("description")
    table.add_column("prompt prefix")
    table.add_column("prompt suffix")
    for lora in loras:
        installed = "[green]yes[/]" if lora["installed"] else "[red]no[/]"
        table.add_row(
            lora["name"], installed, lora["description"], lora["prompt_prefix"], lora["prompt_suffix"]
        )
    return table


def parameters_table(workflow: dict[str, Any]) -> Table:
    table = Table(title=f"{workflow['id']} parameters")
    for column in ("name", "type", "default", "range / choices", "description"):
        table.add_column(column)
    for p in workflow["parameters"]:
        limits = p.get("choices") or [v for v in (p.get("min"), p.get("max")) if v is not None]
        default = "[bold]required[/]" if p["required"] else repr(p.get("default"))
        table.add_row(p["name"], p["type"], default, ", ".join(map(str, limits)), p["description"])
    return table


def request_panel(
    workflow_id: str, params: dict[str, Any], server: str, labels: dict[str, str] | None = None
) -> Panel:
    """What is about to be queued; ``labels`` show uploaded files by name rather than by asset id."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in params.items():
        if labels and name in labels:
            table.add_row(name, labels[name])
        elif isinstance(value, core.LocalFile):
            table.add_row(name, f"{escape(str(value.path))} [dim](local file, uploaded before queueing)[/]")
        else:
            table.add_row(name, escape(repr(value)))
    if not params:
        table.add_row("(defaults)", "")
    return Panel(table, title=f"[bold]{workflow_id}[/] → {server}", expand=False)


def task_panel(task: dict[str, Any], saved: list[Path]) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("task", task["task_id"])
    table.add_row("status", status_text(task["status"]))
    if task.get("queue"):
        table.add_row("queue", f"position {task['queue']['position']} of {task['queue']['waiting']}")
    for label, key in (("starts ~", "estimated_start_at"), ("done ~", "estimated_finish_at")):
        if task.get(key):
            table.add_row(label, core.eta_text(task[key]))
    if task["status"] not in core.TERMINAL and task["progress"]["max"]:
        p = task["progress"]
        table.add_row(
            "progress", f"{p['node_type'] or p['node']} {p['value']}/{p['max']} ({p['percent']:.0f}%)"
        )
    for name in ("worker", "created_at", "started_at", "finished_at"):
        if task.get(name):
            table.add_row(name.replace("_", " "), str(task[name]))
    if task.get("error"):
        error = task["error"]
        where = f" (node {error['node_id']} {error.get('node_type') or ''})" if error.get("node_id") else ""
        table.add_row("error", f"[red]{error['type']}[/]: {error['message']}{where}")
    for index, output in enumerate(task["outputs"]):
        kind = output.get("kind") or output.get("content_type") or ""
        table.add_row(
            "output" if index == 0 else "", f"{escape(core.output_filename(output))} [dim]({kind})[/]"
        )
        table.add_row("", f"[dim]{escape(output['url'])}[/]")  # a signed link: valid until url_expires_at
    for index, path in enumerate(saved):
        table.add_row("saved" if index == 0 else "", str(path))
    colour = {"SUCCESS": "green", "FAILURE": "red", "CANCELLED": "red"}.get(task["status"], "blue")
    return Panel(table, title=f"[{colour}]{task['workflow_id']}[/]", expand=False)


def status_text(status: str) -> str:
    colour = {"SUCCESS": "green", "FAILURE": "red", "CANCELLED": "red", "PENDING": "yellow"}.get(
        status, "blue"
    )
    return f"[{colour}]{status}[/]"


# --- following a task live -----------------------------------------------------------------------------


class LiveBar:
    """One rich progress bar driven by the task's events: steps of the running sampler, elapsed, ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bar: TaskID = progress.add_task("queued", total=None, previews="")
        self.previews = 0

    def preview(self) -> None:
        """An in-progress frame arrived (COMFYUI_PREVIEW_METHOD on): counted, not shown."""
        self.previews += 1
        self.progress.update(self.bar, previews=f"{self.previews} preview{'s' if self.previews > 1 else ''}")

    def show(self, task: dict[str, Any]) -> None:
        status = task["status"]
        if status == "PENDING":
            queue = task.get("queue")
            where = f" (position {queue['position']} of {queue['waiting']})" if queue else ""
            if queue and queue.get("blocked"):
                where += f": {queue['blocked']}"
            elif task.get("estimated_start_at"):
                where += f", starts {core.eta_text(task['estimated_start_at'])}"
            self.progress.update(self.bar, description=f"queued{where}")
            return
        p = task["progress"]
        if p["max"]:
            label = p["node_type"] or p["node"] or "running"
            current = self.progress.tasks[0]
            if current.total != p["max"] or p["value"] < current.completed:
                # Another stepped node (a second sampler, an upscaler): a fresh bar and ETA.
                self.progress.reset(self.bar, total=p["max"])
            self.progress.update(self.bar, description=label, completed=p["value"])
        else:
            label = {"STARTED": "started", "PROGRESS": p["node_type"] or "running"}.get(
                status, status.lower()
            )
            self.progress.update(self.bar, description=label)
        if status == "SUCCESS":
            total = self.progress.tasks[0].total or 1
            self.progress.update(self.bar, description="done", total=total, completed=total)


def follow(client: core.Client, task_id: str, timeout_s: float | None) -> dict[str, Any]:
    """Shows the task's events live until it finishes; resumes a dropped stream with its last event id."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.fields[previews]}"),
    )
    last_id: str | None = None
    task: dict[str, Any] | None = None
    failures = 0
    with Progress(*columns, console=console, transient=False) as progress:
        bar = LiveBar(progress)
        while True:
            try:
                for event, event_id, data in client.events(task_id, last_id, previews=True):
                    if deadline is not None and time.monotonic() > deadline:
                        raise core.WaitTimeoutError(task_id, timeout_s or 0, task)
                    if data is None:
                        continue  # heartbeat: the check above is all it is for
                    if event == "preview":
                        bar.preview()  # no id: never one to resume from
                        continue
                    if not isinstance(data, dict) or "status" not in data:
                        continue  # an event of a newer service that is not the task
                    task, failures = data, 0
                    last_id = event_id or last_id
                    bar.show(data)
                if task is None or task["status"] not in core.TERMINAL:
                    task = client.status(task_id)  # stream ended early (resumed past the end): read it
                if task["status"] in core.TERMINAL:
                    return task
            except core.WaitTimeoutError:
                raise
            except core.ApiError as exc:
                if exc.status is not None or failures >= RECONNECTS:
                    raise
                failures += 1
                progress.console.print(f"[yellow]connection lost ({escape(exc.message)}); resuming[/]")
                time.sleep(min(2.0**failures, 15.0))  # back-off between reconnects, not a wait for state


# --- commands ------------------------------------------------------------------------------------------


def cmd_list(client: core.Client, args: argparse.Namespace) -> int:
    workflows, loras = client.workflows(), client.loras()
    if args.json:
        stdout.print_json(json.dumps({"workflows": workflows, "loras": loras}))
        return core.EXIT_OK
    stdout.print(workflows_table(workflows))
    stdout.print(loras_table(loras))
    return core.EXIT_OK


def upload_files(
    client: core.Client, params: dict[str, Any], quiet: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """Uploads each @file parameter; returns the parameters with asset ids, and labels naming the files."""
    resolved, labels = dict(params), {}
    for name, value in params.items():
        if not isinstance(value, core.LocalFile):
            continue
        if quiet:
            asset = client.upload_param(name, value)
        else:
            with console.status(f"uploading {escape(value.name)} for {escape(name)}"):
                asset = client.upload_param(name, value)
            short = asset["id"][:12]
            console.print(
                f"[green]uploaded[/] {escape(value.name)} → asset [bold]{short}[/] ({escape(name)})"
            )
        resolved[name] = asset["id"]
        labels[name] = f"{escape(value.name)} [dim](asset {asset['id'][:12]})[/]"
    return resolved, labels


def run_job(client: core.Client, args: argparse.Namespace, workflow_id: str, params: dict[str, Any]) -> int:
    params, labels = upload_files(client, params, quiet=args.json)
    if not args.json:
        console.print(request_panel(workflow_id, params, client.server, labels))
    accepted = client.generate(
        workflow_id,
        params,
        priority=getattr(args, "priority", None),  # (asked interactively: the service's default)
        webhook_url=getattr(args, "webhook_url", None),
    )
    task_id = accepted["task_id"]
    try:
        if args.json:
            task = client.wait(task_id, args.timeout)
        else:
            console.print(f"task [bold]{task_id}[/] queued")
            task = follow(client, task_id, args.timeout)
    except KeyboardInterrupt:
        console.print(
            f"\n[yellow]detached[/]: task [bold]{task_id}[/] goes on. "
            f"Follow it with: python api_client.py status {task_id} --follow"
        )
        return core.EXIT_INTERRUPTED
    saved: list[Path] = []
    if task["status"] == "SUCCESS":
        saved = client.download(task, Path(args.out) / task_id)
    if args.json:
        stdout.print_json(json.dumps({**task, "saved": [str(p) for p in saved]}))
    else:
        console.print(task_panel(task, saved))
    return core.EXIT_OK if task["status"] == "SUCCESS" else core.EXIT_JOB_FAILED


def cmd_run(client: core.Client, args: argparse.Namespace) -> int:
    params = core.parse_param_args(args.param, client.workflow(args.workflow))
    return run_job(client, args, args.workflow, params)


def cmd_status(client: core.Client, args: argparse.Namespace) -> int:
    if args.follow and not args.json:
        try:
            task = follow(client, args.task_id, args.timeout)
        except KeyboardInterrupt:
            return core.EXIT_INTERRUPTED
    else:
        task = client.wait(args.task_id, args.timeout) if args.follow else client.status(args.task_id)
    if args.json:
        stdout.print_json(json.dumps(task))
    else:
        stdout.print(task_panel(task, []))
    return core.EXIT_JOB_FAILED if task["status"] in ("FAILURE", "CANCELLED") else core.EXIT_OK


def cmd_interactive(client: core.Client, args: argparse.Namespace) -> int:
    workflows = client.workflows()
    if not workflows:
        raise core.ApiError(f"{client.server} offers no workflows", exit_code=core.EXIT_UNAVAILABLE)
    console.print(workflows_table(workflows))
    loras = client.loras()
    if loras:
        console.print(loras_table(loras))
    ids = [wf["id"] for wf in workflows]
    workflow_id = Prompt.ask("workflow", choices=ids, default=ids[0], console=console)
    workflow = client.workflow(workflow_id)
    console.print(parameters_table(workflow))
    raw: list[str] = []
    for p in workflow["parameters"]:
        default = None if p["required"] else ("" if p.get("default") is None else str(p["default"]))
        choices = [str(c) for c in p["choices"]] if p.get("choices") else None
        if choices is not None and default not in choices:
            choices = [*choices, default] if default is not None else choices
        label = p["name"]
        if p["type"] in core.MEDIA_TYPES:
            label += " [dim](@file, asset id or URL)[/]"
        answer = Prompt.ask(label, default=default, choices=choices, console=console)
        if answer is not None and answer != default:
            raw.append(f"{p['name']}={answer}")
    params = core.parse_param_args(raw, workflow)
    console.print(request_panel(workflow_id, params, client.server))
    if not Confirm.ask("queue it?", default=True, console=console):
        return core.EXIT_OK
    return run_job(client, args, workflow_id, params)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, parents=[core.common_options()])
    common.add_argument("--out", default="outputs", help="outputs go to OUT/<task_id>/ (default: outputs)")
    parser = argparse.ArgumentParser(
        description="comfyjobs terminal client; with no command on a terminal, asks what to run",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("list", parents=[common], help="workflows (with availability) and LoRAs")
    run = commands.add_parser(
        "run", parents=[common, core.job_options()], help="queue a job, follow it, download its outputs"
    )
    run.add_argument("workflow")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    status = commands.add_parser("status", parents=[common], help="a task's status")
    status.add_argument("task_id")
    status.add_argument("--follow", action="store_true", help="follow it live until it finishes")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not (sys.stdin.isatty() and console.is_terminal):
        parser.print_usage(sys.stderr)
        console.print("[red]error:[/] give a command (list, run, status); asking needs a terminal")
        return core.EXIT_USAGE
    commands = {"list": cmd_list, "run": cmd_run, "status": cmd_status, None: cmd_interactive}
    with core.Client(args.server, args.api_key) as client:
        try:
            return commands[args.command](client, args)
        except core.ApiError as exc:
            console.print(f"[red]error:[/] {escape(str(exc))}")
            return exc.exit_code
        except (KeyboardInterrupt, EOFError):  # Ctrl-C, or Ctrl-D at a question
            console.print("\ninterrupted")
            return core.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
