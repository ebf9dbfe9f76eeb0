"""Tiled VAE decoding through diffusers' own `AutoencoderKL.tiled_decode` (no tiling maths here).

The VAE module is shared between nodes and runs (the residency manager keeps one copy), so the tile
size is set only for the duration of one call and restored afterwards, also on errors.
"""

from __future__ import annotations

from typing import Any

import torch


def latent_tile(vae: Any, tile_size: int) -> int:
    """Latent tile edge for a pixel tile edge, with diffusers' own formula (downscale 2**(levels-1))."""
    return int(tile_size / (2 ** (len(vae.config.block_out_channels) - 1)))


def tiled_decode(vae: Any, z: torch.Tensor, tile_size: int | None = None) -> torch.Tensor:
    """Decode unscaled latents `z` tile by tile; `tile_size` in pixels (None: the VAE's default)."""
    if not hasattr(vae, "tiled_decode"):
        raise TypeError(f"{type(vae).__name__} has no tiled decoding")
    saved = (vae.tile_sample_min_size, vae.tile_latent_min_size)
    try:
        if tile_size is not None:
            vae.tile_sample_min_size = int(tile_size)
            vae.tile_latent_min_size = latent_tile(vae, int(tile_size))
        return vae.tiled_decode(z, return_dict=False)[0]
    finally:
        vae.tile_sample_min_size, vae.tile_latent_min_size = saved
