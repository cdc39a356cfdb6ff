"""A "smoke" upscale model: Real-ESRGAN's Compact architecture (SRVGGNetCompact), tiny, random weights.

ComfyUI's ``UpscaleModelLoader`` hands the file to spandrel, which tells the architecture from the state
dict's key names and shapes: ``body.0.weight``/``body.1.weight`` (first conv, its PReLU) make it Compact,
the number of ``body.N`` entries gives the conv count, and the last conv's output channels (3·scale²,
rearranged by a pixel shuffle) give the scale. So a file with that layout and a few features upscales by
``scale`` through the real upscale path, on CPU, in milliseconds, without a model download.

The network adds its output to the nearest-neighbour upscale of the input; with small random weights the
result is that upscale plus faint noise, so the picture stays recognisable.

The tensors are plain arrays (numpy, saved with safetensors): neither torch nor spandrel is imported here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file

from comfyjobs.comfy.model_file import placing_model_file
from comfyjobs.errors import ConfigError

MAX_SCALE = 8
NUM_FEAT = 8  # the realesr-general-x4v3 model has 64 features and 32 convs
NUM_CONV = 2
_CHANNELS = 3  # RGB in and out
_PRELU_INIT = 0.25  # torch.nn.PReLU's initial slope


def build_state_dict(
    scale: int = 2, *, num_feat: int = NUM_FEAT, num_conv: int = NUM_CONV, seed: int = 0
) -> dict[str, npt.NDArray[np.float32]]:
    """SRVGGNetCompact's state dict: ``body.0`` conv 3→num_feat, then (PReLU, conv) pairs, a PReLU, and
    the last conv num_feat→3·scale² whose output a pixel shuffle turns into the upscaled image."""
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be 1..{MAX_SCALE}, not {scale}")
    if num_feat < 1 or num_conv < 0:
        raise ValueError("num_feat must be at least 1 and num_conv at least 0")
    rng = np.random.default_rng(seed)

    def conv(index: int, c_in: int, c_out: int) -> dict[str, npt.NDArray[np.float32]]:
        weight = rng.normal(0.0, 0.02, size=(c_out, c_in, 3, 3)).astype(np.float32)
        return {f"body.{index}.weight": weight, f"body.{index}.bias": np.zeros(c_out, dtype=np.float32)}

    def prelu(index: int) -> dict[str, npt.NDArray[np.float32]]:
        return {f"body.{index}.weight": np.full(num_feat, _PRELU_INIT, dtype=np.float32)}

    tensors = {**conv(0, _CHANNELS, num_feat), **prelu(1)}
    for i in range(num_conv):
        tensors |= {**conv(2 + 2 * i, num_feat, num_feat), **prelu(3 + 2 * i)}
    tensors |= conv(2 + 2 * num_conv, num_feat, _CHANNELS * scale * scale)
    return tensors


def write_smoke_upscaler(path: Path, *, scale: int = 2, force: bool = False) -> Path:
    """Writes the smoke upscale model (a .safetensors file) at ``path`` unless it is there already (or
    ``force``); returns ``path``. The file appears under its final name only once complete: ComfyUI lists
    upscale models by name and must never see a half-written one."""
    if path.suffix != ".safetensors":
        raise ValueError(f"the smoke upscaler is written as .safetensors, not {path.name}")
    tensors = build_state_dict(scale)
    if path.exists() and not force:
        return path
    with placing_model_file(path, "the smoke upscaler") as tmp:
        save_file(tensors, str(tmp), metadata={"comfyjobs_smoke_upscaler_scale": str(scale)})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyjobs.comfy.smoke_upscaler", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--scale", type=int, default=2, help=f"upscale factor, 1..{MAX_SCALE}")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        out = write_smoke_upscaler(args.out, scale=args.scale, force=args.force)
    except (ValueError, ConfigError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{out}: {out.stat().st_size:,} bytes, {args.scale}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
