"""The smoke upscale model: spandrel (what ComfyUI's UpscaleModelLoader uses) detects it as Real-ESRGAN
Compact with the scale it was written for, and it upscales by that scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyjobs.comfy.smoke_upscaler import build_state_dict, main, write_smoke_upscaler


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_spandrel_loads_it_and_it_upscales_by_its_scale(tmp_path: Path, scale: int) -> None:
    torch = pytest.importorskip("torch")
    spandrel = pytest.importorskip("spandrel")
    path = write_smoke_upscaler(tmp_path / "upscale_models" / f"smoke-{scale}x.safetensors", scale=scale)
    assert path.stat().st_size < 50_000

    model = spandrel.ModelLoader().load_from_file(str(path))
    assert isinstance(model, spandrel.ImageModelDescriptor)  # ComfyUI refuses anything else
    assert (model.architecture.id, model.scale) == ("Compact", scale)
    assert (model.input_channels, model.output_channels) == (3, 3)

    image = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        out = model(image)
    assert tuple(out.shape) == (1, 3, 8 * scale, 12 * scale)
    # Small random weights on top of a nearest-neighbour upscale: the picture survives.
    nearest = torch.nn.functional.interpolate(image, scale_factor=scale, mode="nearest")
    assert float((out - nearest).abs().max()) < 0.05


def test_written_once_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "smoke.safetensors"
    write_smoke_upscaler(path)
    first = path.read_bytes()
    assert write_smoke_upscaler(path, scale=4) == path
    assert path.read_bytes() == first  # there already: left alone
    write_smoke_upscaler(path, scale=4, force=True)
    assert path.read_bytes() != first
    write_smoke_upscaler(path, force=True)
    assert path.read_bytes() == first  # the same bytes for the same scale
    assert [p.name for p in tmp_path.iterdir()] == ["smoke.safetensors"]  # no temporary file left


def test_state_dict_layout() -> None:
    sd = build_state_dict(3, num_feat=4, num_conv=1)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "body.0.weight": (4, 3, 3, 3),
        "body.0.bias": (4,),
        "body.1.weight": (4,),
        "body.2.weight": (4, 4, 3, 3),
        "body.2.bias": (4,),
        "body.3.weight": (4,),
        "body.4.weight": (27, 4, 3, 3),  # 3 channels x 3 x 3 for the pixel shuffle
        "body.4.bias": (27,),
    }


@pytest.mark.parametrize(("name", "scale"), [("a.safetensors", 0), ("a.safetensors", 9), ("a.pth", 2)])
def test_bad_arguments(tmp_path: Path, name: str, scale: int) -> None:
    with pytest.raises(ValueError, match=r"scale must be 1\.\.8|written as \.safetensors"):
        write_smoke_upscaler(tmp_path / name, scale=scale)
    assert not list(tmp_path.iterdir())


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x4.safetensors"
    assert main(["--out", str(out), "--scale", "4"]) == 0
    assert out.is_file() and "4x" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "bad.safetensors"), "--scale", "0"]) == 2
    assert "scale must be" in capsys.readouterr().err
