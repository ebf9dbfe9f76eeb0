"""Tiny random ControlNets for the built-in tiny transformer models, for tests and graphs:

- `builtin:tinyflux-canny`: an InstantX-style `FluxControlNetModel` for builtin:tinyflux (one double-
  and one single-stream block, the transformer's widths and guidance input; it reads the control image
  VAE-encoded and packed);
- `builtin:tinyflux-union`: the same with `num_mode` 7, a union ControlNet like Shakker-Labs'
  FLUX.1-dev-ControlNet-Union-Pro (canny, tile, depth, blur, pose, gray, lq);
- `builtin:tinysd3-canny`: an `SD3ControlNetModel` for builtin:tinysd3 shaped like Stability's
  SD3.5-large ControlNets (stabilityai/stable-diffusion-3.5-large-controlnet-canny, -depth, -blur): half
  the transformer's blocks (1 of 2, as 19 of 38), single-stream blocks that read no prompt
  (`joint_attention_dim: null`), no position embedding of its own (`use_pos_embed: false`: the pipeline
  lends it the transformer's) and the real pooled projections (`force_zeros_for_pooled_projection:
  false`). `build_tiny_sd3_controlnet(..., instantx=True)` makes the other kind, InstantX's SD3-medium
  nets (InstantX/SD3-Controlnet-Canny): joint blocks reading the prompt, their own position embedding,
  zeros for the pooled projections.
Every weight, the zero-initialised projections included, is drawn from a seeded generator: a fresh
ControlNet's zero layers make it an exact no-op, and a no-op proves nothing in a test.
Regenerate the committed folders with `python -m nodegraph_control.tiny_transformer_control build`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "nodegraph_diffusion" / "builtin"
SCALE = 0.6  # weight scale: the residuals move the tiny models' predictions visibly
FLUX_NETS = {"tinyflux-canny": (606, None), "tinyflux-union": (707, 7)}  # name: (seed, num_mode)
SD3_NETS = {"tinysd3-canny": 808}


def build_tiny_flux_controlnet(transformer: Any, seed: int, num_mode: int | None = None) -> Any:
    """A random InstantX-style Flux ControlNet fitting `transformer` (a FluxTransformer2DModel)."""
    import torch
    from diffusers import FluxControlNetModel
    from nodegraph_diffusion.tiny import _init_

    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    config.pop("out_channels", None)
    net = FluxControlNetModel(**config, num_mode=num_mode)
    _init_(net, torch.Generator("cpu").manual_seed(seed), scale=SCALE)
    return net.eval()


def build_tiny_sd3_controlnet(transformer: Any, seed: int, instantx: bool = False) -> Any:
    """A random SD3 ControlNet fitting `transformer` (an SD3Transformer2DModel): SD3.5-large style (as
    diffusers' scripts/convert_sd3_controlnet_to_diffusers.py configures those), or InstantX style."""
    import torch
    from diffusers import SD3ControlNetModel
    from nodegraph_diffusion.tiny import _init_

    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    if instantx:
        config.update(force_zeros_for_pooled_projection=True)
    else:
        config.update(num_layers=max(1, int(config["num_layers"]) // 2), joint_attention_dim=None,
                      pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False,
                      force_zeros_for_pooled_projection=False)
    net = SD3ControlNetModel(**config)
    _init_(net, torch.Generator("cpu").manual_seed(seed), scale=SCALE)
    return net.eval()


def save_builtin(root: Path = BUILTIN_DIR) -> list[Path]:
    """Write the tiny Flux and SD3 ControlNets (diffusers layout, safetensors) under `root`."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    flux = FluxTransformer2DModel.from_pretrained(BUILTIN_DIR / "tinyflux", subfolder="transformer",
                                                  local_files_only=True)
    sd3 = SD3Transformer2DModel.from_pretrained(BUILTIN_DIR / "tinysd3", subfolder="transformer",
                                                local_files_only=True)
    nets = {name: build_tiny_flux_controlnet(flux, seed, mode) for name, (seed, mode) in FLUX_NETS.items()}
    nets.update({name: build_tiny_sd3_controlnet(sd3, seed) for name, seed in SD3_NETS.items()})
    written = []
    for name, net in nets.items():
        if (root / name).exists():
            shutil.rmtree(root / name)
        net.save_pretrained(root / name, safe_serialization=True)
        written.append(root / name)
    return written


def main(argv: list[str]) -> int:
    """`python -m nodegraph_control.tiny_transformer_control build [ROOT]`."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_control.tiny_transformer_control build [ROOT]", file=sys.stderr)
        return 2
    for path in save_builtin(Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
