"""Tiny control models matching the built-in tiny UNet ("tinyworld"), for tests, examples and graphs.

- `build_tiny_controlnet(unet, seed)`: `ControlNetModel.from_unet` (the UNet's encoder weights), then
  the conditioning embedding and the zero convolutions are overwritten from a seeded generator. A fresh
  ControlNet's zero convolutions make it an exact no-op; perturbed, it steers the image.
- `build_tiny_adapter(unet, seed)`: a full T2I-Adapter whose feature maps match the UNet's down
  blocks (channels = the UNet's `block_out_channels`, pixel-unshuffle by 8 = the VAE's downscale, so
  the first map has the latent size and each next one is halved like the UNet's).
- `build_tiny_adapter_xl(unet, seed)`: a T2I-Adapter-XL (`full_adapter_xl`) for an SDXL UNet. SDXL's
  UNet takes the adapter's maps after its first down block (already downsampled: pixel-unshuffle by
  16, one latent cell per 2x2) and at the end of each later down block; the XL adapter halves its maps
  once only, at its third block. For the tiny SDXL UNet (two down blocks, 32 and 64 channels) that
  is two maps of the same size, channels (32, 64).
Weights depend only on the seed. Regenerate the committed folders with
`python -m nodegraph_control.tiny_control build` (builtin/tinyworld-pose, -edge, -adapter, and
builtin/tinyxl-edge, tinyxl-adapter for the tiny SDXL).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "nodegraph_diffusion" / "builtin"
COND_CHANNELS = (8, 16, 16, 32)  # 3 stride-2 convs: pixels / 8 = latent size, like the VAE
SEEDS = {"tinyworld-pose": 101, "tinyworld-edge": 202, "tinyworld-adapter": 303}
XL_SEEDS = {"tinyxl-edge": 404}  # ControlNets of the tiny random SDXL (builtin:tinyxl)
XL_ADAPTER_SEEDS = {"tinyxl-adapter": 505}  # its T2I-Adapter-XL
XL_ADAPTER_DOWNSCALE = 16  # T2I-Adapter-XL's pixel-unshuffle: maps at half the latent size, like SDXL's


def _fill(
    params: list[tuple[str, torch.nn.Parameter]], generator: torch.Generator, scale: float, bias: float = 0.05
) -> None:
    with torch.no_grad():
        for _name, param in sorted(params, key=lambda item: item[0]):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            fan_in = param[0].numel() if param.ndim > 1 else 1
            param.copy_(noise * (scale / fan_in**0.5 if param.ndim > 1 else bias))


def build_tiny_controlnet(
    unet: Any, seed: int, strength: float = 1.0, embed: float = 3.0, bias: float = 0.0
) -> Any:
    """A ControlNet copied from `unet`, with seeded conditioning embedding and zero convolutions.

    `embed` scales the conditioning embedding and `strength` the zero convolutions; their biases stay
    zero (`bias`; the embedding's get small noise), so what the unit adds depends on the control
    image, not a constant offset.
    """
    from diffusers import ControlNetModel

    generator = torch.Generator("cpu").manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_CHANNELS)
    embedding = [(f"e.{n}", p) for n, p in net.controlnet_cond_embedding.named_parameters()]
    _fill(embedding, generator, embed)
    zero_convs = [(f"d.{n}", p) for n, p in net.controlnet_down_blocks.named_parameters()]
    zero_convs += [(f"m.{n}", p) for n, p in net.controlnet_mid_block.named_parameters()]
    _fill(zero_convs, generator, strength, bias)
    return net.eval()


def build_tiny_adapter(unet: Any, seed: int) -> Any:
    """A full T2I-Adapter whose features fit `unet`'s down blocks, weights drawn from `seed`."""
    from diffusers import T2IAdapter

    generator = torch.Generator("cpu").manual_seed(seed)
    adapter = T2IAdapter(
        in_channels=3,
        channels=list(unet.config.block_out_channels),
        num_res_blocks=1,
        downscale_factor=8,
        adapter_type="full_adapter",
    )
    _fill(list(adapter.named_parameters()), generator, 1.0)
    return adapter.eval()


def build_tiny_adapter_xl(unet: Any, seed: int, in_channels: int = 3) -> Any:
    """A T2I-Adapter-XL (`full_adapter_xl`) whose maps fit an SDXL `unet`'s down blocks, from `seed`.

    The real adapter has 4 maps (320, 640, 1280, 1280) for SDXL's three down blocks and its mid block;
    a UNet whose last down block is as wide as its mid block gets one map per down block here (the
    UNet adds a map to the mid block only if one is left and its shape fits). `in_channels=1` makes
    it like the canny/sketch adapters, which read a greyscale image."""
    from diffusers import T2IAdapter

    generator = torch.Generator("cpu").manual_seed(seed)
    adapter = T2IAdapter(
        in_channels=in_channels,
        channels=list(unet.config.block_out_channels),
        num_res_blocks=1,
        downscale_factor=XL_ADAPTER_DOWNSCALE,
        adapter_type="full_adapter_xl",
    )
    _fill(list(adapter.named_parameters()), generator, 1.0)
    return adapter.eval()


def tiny_unet() -> Any:
    """The built-in tiny UNet, loaded from its committed folder."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(
        BUILTIN_DIR / "tinyworld", subfolder="unet", local_files_only=True
    )


def save_builtin(root: Path = BUILTIN_DIR) -> list[Path]:
    """Write tinyworld-pose, tinyworld-edge (ControlNets) and tinyworld-adapter (T2I-Adapter), diffusers
    layout."""
    unet = tiny_unet()
    written = []
    for name, seed in SEEDS.items():
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        model = (
            build_tiny_adapter(unet, seed) if name.endswith("adapter") else build_tiny_controlnet(unet, seed)
        )
        model.save_pretrained(target, safe_serialization=True)
        written.append(target)
    return written


def save_builtin_xl(root: Path = BUILTIN_DIR) -> list[Path]:
    """Write tinyxl-edge (an SDXL ControlNet: `text_time` added embedding) and tinyxl-adapter (a
    T2I-Adapter-XL) of the tiny SDXL's UNet."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(BUILTIN_DIR / "tinyxl", subfolder="unet",
                                                local_files_only=True)
    written = []
    for name, seed in XL_SEEDS.items():
        if (root / name).exists():
            shutil.rmtree(root / name)
        build_tiny_controlnet(unet, seed).save_pretrained(root / name, safe_serialization=True)
        written.append(root / name)
    for name, seed in XL_ADAPTER_SEEDS.items():
        if (root / name).exists():
            shutil.rmtree(root / name)
        build_tiny_adapter_xl(unet, seed).save_pretrained(root / name, safe_serialization=True)
        written.append(root / name)
    return written


def main(argv: list[str]) -> int:
    """`python -m nodegraph_control.tiny_control build [ROOT]`."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_control.tiny_control build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    for path in [*save_builtin(root), *save_builtin_xl(root)]:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
