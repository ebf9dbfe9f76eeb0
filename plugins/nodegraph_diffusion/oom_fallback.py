"""Out-of-memory fallback of the VAE decoder: offload idle models, then decode tile by tile.

A full-size decode at high resolution is the most common out-of-memory point of a run. Rather than
fail, the node frees the device of models it does not need and decodes with diffusers' tiled decoder
(seams are blended; the image differs slightly from a one-piece decode), and says so in the run report.
"""

from __future__ import annotations

from typing import Any

import torch

from nodegraph.api import NodeContext
from nodegraph_diffusion.vae_upcast import decode_finite

FALLBACK_TILE = 512  # pixels; diffusers' default tile for SD-family VAEs


def decode_with_fallback(ctx: NodeContext, vae: Any, latents: torch.Tensor, tiled: bool,
                         tile_size: int | None) -> torch.Tensor:
    """`vae_upcast.decode_finite`, retried tiled (after offloading idle models) when it runs out of memory."""
    try:
        return decode_finite(ctx, vae, latents, tiled=tiled, tile_size=tile_size)
    except torch.OutOfMemoryError:
        if tiled and (tile_size or FALLBACK_TILE) <= 64:
            raise
    moved = ctx.resources.offload_idle()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    tile = min(tile_size or FALLBACK_TILE, FALLBACK_TILE) if not tiled else max(64, (tile_size or 128) // 2)
    ctx.note(f"out of memory while decoding; offloaded {moved} idle model(s) and decoded in {tile}px tiles")
    return decode_finite(ctx, vae, latents, tiled=True, tile_size=tile)
