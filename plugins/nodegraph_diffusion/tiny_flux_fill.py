"""A tiny random FLUX.1-Fill ("tinyflux-fill") for tests and graphs/flux_fill.yaml's default.

FLUX.1-Fill-dev is FLUX.1-dev with a wider input: its transformer reads 384 channels per packed token
(`in_channels` 384, `out_channels` 64): the 64 of the noisy latents (16 channels x 2x2 patch), 64 of
the masked picture's latents and 256 of the mask (the 8x8 pixels under each latent cell, 64 channels,
x 2x2 patch); it predicts the 64 latent channels only. Its text encoders, VAE and scheduler are
FLUX.1-dev's. The tiny one mirrors that: tinyflux's components (tiny_flux.py, the same seed, so the
text encoders and VAE are tinyflux's own weights) with a transformer of tinyflux's shape but
384 inputs, random from its own seed. Its pictures are noise; every code path runs in a second.

Regenerate the committed copy with `python -m nodegraph_diffusion.tiny_flux_fill build`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny_flux import BUILTIN_DIR, TRANSFORMER_CONFIG
from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

NAME = "tinyflux-fill"
SEED = 13  # the Fill transformer's own seed (the rest is tinyflux's, seed 0)
# FLUX.1-Fill-dev's transformer config, in tiny: 16 latent + 16 masked-image latent + 64 mask channels,
# each packed 2x2; the output is the 16 latent channels packed
FILL_TRANSFORMER_CONFIG: dict[str, Any] = {**TRANSFORMER_CONFIG, "in_channels": 384, "out_channels": 64}


def build_tiny_flux_fill_components(seed: int = SEED) -> dict[str, Any]:
    """The components of the tiny FLUX.1-Fill as `FluxFillPipeline` kwargs."""
    import torch
    from diffusers import FluxTransformer2DModel

    from nodegraph_diffusion.tiny import _init_
    from nodegraph_diffusion.tiny_flux import build_tiny_flux_components

    components = build_tiny_flux_components(0, "dev")
    transformer = FluxTransformer2DModel(**FILL_TRANSFORMER_CONFIG, guidance_embeds=True)
    _init_(transformer, torch.Generator("cpu").manual_seed(seed))
    components["transformer"] = transformer.eval()
    return components


def save_tiny_flux_fill(folder: Path, seed: int = SEED) -> Path:
    """Write the tiny FLUX.1-Fill in standard diffusers layout (model_index `FluxFillPipeline`)."""
    from diffusers import FluxFillPipeline

    folder = Path(folder)
    FluxFillPipeline(**build_tiny_flux_fill_components(seed)).save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder / "tokenizer")  # vocab.json + merges.txt, as tinyflux ships it
    return folder


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_flux_fill build [ROOT]`: regenerate builtin/tinyflux-fill."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_flux_fill build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    if (root / NAME).exists():
        shutil.rmtree(root / NAME)
    save_tiny_flux_fill(root / NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
