"""Tile-by-tile upscaling with feathered overlaps, the way ComfyUI's `tiled_scale` runs an upscale model.

Why tiles: an ESRGAN pass over a whole 2048-pixel image needs gigabytes of activations; tiles of 512
with 32 pixels of overlap bound the memory, and the overlaps are blended with linear ramps so seams
do not show. The arithmetic (tile positions, ramps, the weighted average) follows ComfyUI's
`comfy.utils.tiled_scale_multidim` for two spatial dimensions, so imported workflows get its pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def positions(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one side (the last one pulled back to end at the edge)."""
    if size <= tile:
        return [0]
    return [max(0, min(size - overlap, p)) for p in range(0, size - overlap, tile - overlap)]


def ramp_mask(shape: tuple[int, ...], feather: int) -> torch.Tensor:
    """Ones with linear ramps (1/feather ... 1) over `feather` pixels at each edge of both sides."""
    import torch

    mask = torch.ones(shape)
    for dim in (2, 3):
        if feather >= mask.shape[dim]:
            continue
        for t in range(feather):
            a = (t + 1) / feather
            mask.narrow(dim, t, 1).mul_(a)
            mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(a)
    return mask


def tiled_scale(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile: int,
                overlap: int, scale: float, channels: int = 3,
                advance: Callable[[int], None] | None = None) -> torch.Tensor:
    """`function` applied tile by tile to (B, C, H, W) `samples`, blended: (B, channels, H*scale, W*scale).

    An image no larger than a tile goes through `function` whole (then tiled = untiled exactly)."""
    import torch

    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    h, w = int(samples.shape[-2]), int(samples.shape[-1])
    out_h, out_w = round(h * scale), round(w * scale)
    output = torch.empty((samples.shape[0], channels, out_h, out_w))
    for b in range(samples.shape[0]):
        s = samples[b:b + 1]
        if h <= tile and w <= tile:
            output[b:b + 1] = function(s).to("cpu", torch.float32)
            if advance is not None:
                advance(1)
            continue
        total = torch.zeros((1, channels, out_h, out_w))
        weight = torch.zeros((1, channels, out_h, out_w))
        for y in positions(h, tile, overlap):
            for x in positions(w, tile, overlap):
                piece = s.narrow(2, y, min(tile, h - y)).narrow(3, x, min(tile, w - x))
                up = function(piece).to("cpu", torch.float32)
                mask = ramp_mask(tuple(up.shape), round(overlap * scale))
                oy, ox = round(y * scale), round(x * scale)
                total[:, :, oy:oy + up.shape[2], ox:ox + up.shape[3]] += up * mask
                weight[:, :, oy:oy + up.shape[2], ox:ox + up.shape[3]] += mask
                if advance is not None:
                    advance(1)
        output[b:b + 1] = total / weight
    return output


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles one image takes (for progress)."""
    return len(positions(height, tile, overlap)) * len(positions(width, tile, overlap))
