"""The `comfyjobs` command: up, api, worker, check, smoke-model."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from comfyjobs import __version__
from comfyjobs.cli import catalog as catalog_cli
from comfyjobs.cli import exit_codes
from comfyjobs.cli import fleet as fleet_cli
from comfyjobs.errors import (
    CatalogError,
    ComfyError,
    ComfyJobsError,
    ComfyStartError,
    ConfigError,
    ManifestError,
    QueueUnavailableError,
)
from comfyjobs.settings import Settings

log = logging.getLogger("comfyjobs")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfyjobs", description="ComfyUI workflows as a job service.")
    parser.add_argument("--version", action="version", version=f"comfyjobs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run Redis (unless REDIS_URL is set), the workers and the API")
    up.add_argument("--host", help="API bind address (default: API_HOST)")
    up.add_argument("--port", type=int, help="API port (default: API_PORT)")
    up.add_argument("--data-dir", type=Path, help="outputs, Redis data, ComfyUI folders (default: DATA_DIR)")
    up.add_argument("--cpu", action="store_true", help="one CPU worker even if GPUs are present")

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", help="bind address (default: API_HOST)")
    api.add_argument("--port", type=int, help="port (default: API_PORT)")
    api.add_argument(
        "--workers", type=int, default=1, metavar="N", help="API processes sharing the port (default: 1)"
    )

    worker = sub.add_parser("worker", help="run a worker and its ComfyUI")
    where = worker.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", type=int, metavar="N", help="one worker on GPU N")
    where.add_argument("--cpu", action="store_true", help="one worker on the CPU")
    where.add_argument("--gpus", metavar="all|0,1", help="one worker per GPU, supervised together")

    sub.add_parser("check", help="validate manifests and workflow templates; starts nothing")
    catalog_cli.add_parser(sub)
    fleet_cli.add_parser(sub)

    doctor = sub.add_parser("doctor", help="check every workflow's nodes and models against ComfyUI")
    doctor.add_argument("--comfyui-url", help="a running ComfyUI to ask (default: start one for the check)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    models = sub.add_parser("models", help="model files")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    download = models_sub.add_parser("download", help="download what models.ini lists into MODEL_DIR")
    download.add_argument("--file", type=Path, default=Path("install/configs/models.ini"))
    download.add_argument("--model-dir", type=Path, help="models folder (default: MODEL_DIR)")
    download.add_argument("--allow-missing", action="store_true", help="exit 0 even if some downloads fail")
    download.add_argument(
        "--catalog",
        action="store_true",
        help="instead: the models the active catalog's workflows list (those WORKER_LABELS may run)",
    )
    report = models_sub.add_parser(
        "report", help="per folder: files, size, last used, the workflows using them; the cache and its cap"
    )
    report.add_argument("--json", action="store_true", help="machine-readable output")
    prune = models_sub.add_parser("prune", help="the model cache back under MODEL_CACHE_MAX_GB (LRU)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")

    nodes = sub.add_parser("nodes", help="custom nodes")
    nodes_sub = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    nodes_install = nodes_sub.add_parser("install", help="clone and pin what custom_nodes.txt lists")
    nodes_install.add_argument("--file", type=Path, default=Path("install/configs/custom_nodes.txt"))

    deps = sub.add_parser("deps", help="node classes and model files a workflow JSON needs")
    deps.add_argument("file", type=Path)

    imp = sub.add_parser("import", help="turn a ComfyUI export into a template and manifest entries")
    imp.add_argument("file", type=Path, help="API-format or UI-format (workflow.json) export")
    imp.add_argument("--id", required=True, dest="workflow_id", help="the new workflow's id")
    imp.add_argument(
        "--comfyui-url", help="ComfyUI to read /object_info from (UI format; default: start one)"
    )
    imp.add_argument("--overwrite", action="store_true", help="replace a workflow of that id")

    smoke = sub.add_parser(
        "smoke-model",
        help="write a smoke checkpoint and a smoke 2x upscale model (random weights, for tests)",
    )
    smoke.add_argument("--model-dir", type=Path, help="models folder (default: MODEL_DIR)")
    smoke.add_argument("--force", action="store_true", help="rewrite it even if present")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _check(settings: Settings) -> int:
    from comfyjobs.manifests.loader import load_registry

    registry = load_registry(settings.manifest_dir, settings.workflow_dir)
    for workflow in registry.workflows.values():
        names = ", ".join(p.name for p in workflow.public_parameters)
        print(f"ok  {workflow.id:<20} {workflow.template_file:<24} {names}")
    print(
        f"{len(registry.workflows)} workflow(s), {len(registry.loras)} LoRA description(s): manifests valid"
    )
    return exit_codes.OK


def _run(args: argparse.Namespace) -> int:
    if args.command == "fleet":  # (the operator's laptop: no service settings needed)
        return fleet_cli.run_fleet(args)
    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "model_dir", None) is not None:
        overrides["model_dir"] = args.model_dir
    # Flags go through Settings too: validated, and PUBLIC_URL's default follows the port actually used.
    if getattr(args, "host", None) is not None:
        overrides["api_host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["api_port"] = args.port
    settings = Settings.load(**overrides)
    _configure_logging(settings.log_level)

    if args.command == "check":
        return _check(settings)
    if args.command == "catalog":
        return catalog_cli.run_catalog(settings, args)
    if args.command == "nodes":
        from comfyjobs.comfy.process import default_python
        from comfyjobs.provision.custom_nodes import run_nodes_install

        # The same constraints as every other install step: a node's requirements never swap torch.
        constraints = [Path("install/constraints.txt"), Path("requirements.lock.txt")]
        return run_nodes_install(
            args.file,
            settings.comfyui_dir,
            python=settings.comfyui_python or default_python(),
            constraints=[c for c in constraints if c.is_file()],
        )
    if args.command in ("deps", "import"):
        from comfyjobs.cli.authoring import run_deps, run_import

        if args.command == "deps":
            return run_deps(args.file)
        return run_import(
            settings, args.file, args.workflow_id, comfyui_url=args.comfyui_url, overwrite=args.overwrite
        )
    if args.command == "doctor":
        from comfyjobs.cli.doctor import run_doctor

        return run_doctor(settings, comfyui_url=args.comfyui_url, as_json=args.json)
    if args.command == "models" and args.models_command in ("report", "prune"):
        from comfyjobs.cli.models import run_models_prune, run_models_report

        if args.models_command == "report":
            return run_models_report(settings, as_json=args.json)
        return run_models_prune(settings, dry_run=args.dry_run)
    if args.command == "models" and args.catalog:
        from comfyjobs.cli.models import run_models_download_catalog

        return run_models_download_catalog(settings)
    if args.command == "models":
        from comfyjobs.provision.cli import run_models_download

        return run_models_download(
            args.file,
            settings.model_dir,
            allow_missing=args.allow_missing,
            hf_token=settings.hf_token.get_secret_value() if settings.hf_token else None,
        )
    if args.command == "smoke-model":
        from comfyjobs.comfy.smoke_model import write_smoke_checkpoint
        from comfyjobs.comfy.smoke_upscaler import write_smoke_upscaler

        path = settings.model_dir / "checkpoints" / "smoke-sd15.safetensors"
        write_smoke_checkpoint(settings.comfyui_dir, path, force=args.force)
        print(path)
        # A 10 KB 2x upscale model, so the upscale-model workflow runs out of the box too.
        print(
            write_smoke_upscaler(
                settings.model_dir / "upscale_models" / "smoke-2x.safetensors", force=args.force
            )
        )
        return exit_codes.OK
    if args.command == "api":
        from comfyjobs.api.serve import serve

        serve(settings, workers=args.workers)
        return exit_codes.OK
    if args.command == "worker":
        if args.gpus is not None:
            from comfyjobs.cli.up import parse_gpus, run_workers

            return run_workers(settings, parse_gpus(args.gpus))
        from comfyjobs.worker.main import run_worker

        return run_worker(settings, None if args.cpu else args.gpu)
    if args.command == "up":
        from comfyjobs.cli.up import run_up

        return run_up(settings, cpu=args.cpu)
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ManifestError, ConfigError) as exc:
        print(f"comfyjobs: {exc.message}", file=sys.stderr)
        return exit_codes.CONFIG
    except ComfyStartError as exc:
        print(f"comfyjobs: ComfyUI failed to start: {exc.message}", file=sys.stderr)
        return exit_codes.COMFYUI
    except ComfyError as exc:
        print(f"comfyjobs: {exc.message}", file=sys.stderr)
        return exit_codes.COMFYUI
    except CatalogError as exc:
        print(f"comfyjobs: {exc.message}", file=sys.stderr)
        return exit_codes.CATALOG
    except QueueUnavailableError as exc:
        print(f"comfyjobs: {exc.message}", file=sys.stderr)
        return exit_codes.QUEUE
    except ComfyJobsError as exc:
        print(f"comfyjobs: {exc.code}: {exc.message}", file=sys.stderr)
        return exit_codes.ERROR
    except KeyboardInterrupt:
        return exit_codes.OK
