"""A "smoke" checkpoint: Stable Diffusion 1.5's key layout, a tiny UNet, random weights.

ComfyUI tells a checkpoint's architecture from its key names and shapes, so this file is detected and loaded
as SD1.5 and runs the ordinary txt2img graph through the real diffusion path, on CPU, in seconds. The images
are seed-dependent noise; the point is exercising loader, sampler (one progress event per step), VAE and
output handling without a multi-gigabyte download.

The tensors are laid out by ComfyUI's own model classes, so this is the one module that imports ComfyUI
internals, and only inside a subprocess (``python -m comfyjobs.comfy.smoke_model``): the service never loads
torch or ComfyUI, and the ComfyUI install may use a Python of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from comfyjobs.comfy.model_file import placing_model_file
from comfyjobs.errors import ConfigError

if TYPE_CHECKING:
    import torch

STDERR_TAIL_CHARS = 3000


def _build_state_dict(comfyui_dir: Path, seed: int) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(comfyui_dir))
    import comfy.options

    # Must happen before anything imports comfy.model_management: with a CUDA build of torch it would
    # otherwise initialise the GPU (or fail to, on a machine without one). The weights are made on CPU anyway.
    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True

    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.sd1_clip import SD1CheckpointClipModel

    unet = UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=320,
        channel_mult=[1],
        num_res_blocks=[1],
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=1,
        context_dim=768,
        num_head_channels=64,
        use_spatial_transformer=True,
        legacy=False,
    )
    vae_config = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = AutoencoderKL(ddconfig=vae_config, embed_dim=4)
    clip = SD1CheckpointClipModel(device="cpu")

    # ComfyUI's ops skip weight initialisation (it expects to load weights), so parameters start as
    # uninitialised memory: every one is set here, which is also what makes the file a function of the seed.
    torch.manual_seed(seed)
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for model in (unet, vae, clip):
            for module in model.modules():
                is_norm = isinstance(module, norm_types)
                for name, param in module.named_parameters(recurse=False):
                    if name == "bias":
                        param.zero_()
                    elif is_norm:
                        param.fill_(1.0)
                    else:
                        param.normal_(0.0, 0.02)

    # Original SD1.5 checkpoints carry no projection or logit scale for the text model; ComfyUI's loader
    # expects them absent (it filters them from its missing-keys warning) and saves checkpoints without them.
    clip_extra = {"transformer.text_projection.weight", "logit_scale"}
    tensors: dict[str, torch.Tensor] = {}
    for prefix, model, skip in (
        ("model.diffusion_model.", unet, set()),
        ("first_stage_model.", vae, set()),
        ("cond_stage_model.", clip, clip_extra),
    ):
        for key, value in model.state_dict().items():
            if key not in skip:
                tensors[prefix + key] = value.to(torch.float16).contiguous()
    return tensors


def build(comfyui_dir: Path, out: Path, seed: int) -> tuple[int, int]:
    """Writes the checkpoint to ``out`` (as given, not atomically); returns (parameter count, bytes)."""
    from safetensors.torch import save_file

    tensors = _build_state_dict(comfyui_dir, seed)
    # One metadata entry only: safetensors writes the entries in hash-map order, which varies between runs,
    # and the file should be byte-identical for a given seed.
    save_file(tensors, str(out), metadata={"comfyjobs_smoke_sd15_seed": str(seed)})
    return sum(t.numel() for t in tensors.values()), out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyjobs.comfy.smoke_model", description=__doc__)
    parser.add_argument("--comfyui-dir", type=Path, required=True, help="ComfyUI source folder (has comfy/)")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    comfyui_dir = Path(args.comfyui_dir).resolve()
    out = Path(args.out).resolve()
    if not (comfyui_dir / "comfy" / "sd1_clip.py").is_file():
        print(f"not a ComfyUI source folder: {comfyui_dir}", file=sys.stderr)
        return 2
    started = time.monotonic()
    params, size = build(comfyui_dir, out, args.seed)
    elapsed = time.monotonic() - started
    print(f"wrote {out}: {params:,} parameters, {size / 1e6:.1f} MB, seed {args.seed}, {elapsed:.1f} s")
    return 0


def write_smoke_checkpoint(
    comfyui_dir: Path, out: Path, *, python: Path | None = None, seed: int = 0, force: bool = False
) -> Path:
    """Makes the smoke checkpoint at ``out`` unless it is there already (or ``force``); returns ``out``.

    Runs in a subprocess under ``python`` (default: this interpreter), which needs torch, safetensors and
    ComfyUI's requirements. The file appears under its final name only once complete: ComfyUI lists
    checkpoints by name and must never see a half-written one.
    """
    if out.exists() and not force:
        return out
    # Lets another interpreter (ComfyUI's own venv, say) import this package without installing it.
    src_dir = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (src_dir, os.environ.get("PYTHONPATH")) if p),
    }
    with placing_model_file(out, "the smoke checkpoint") as tmp:
        cmd = [
            str(python or sys.executable),
            "-m",
            "comfyjobs.comfy.smoke_model",
            "--comfyui-dir",
            str(comfyui_dir.resolve()),
            "--out",
            str(tmp),
            "--seed",
            str(seed),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = proc.stderr[-STDERR_TAIL_CHARS:].strip()
            raise ConfigError(f"making the smoke checkpoint failed (exit {proc.returncode}):\n{tail}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
