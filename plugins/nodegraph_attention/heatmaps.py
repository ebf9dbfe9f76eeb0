"""Render captured attention maps as pictures: one heat map per word, over the generated image."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def word_maps(maps: torch.Tensor, token_groups: list[list[int]]) -> torch.Tensor:
    """(words, h, w): each word's tokens summed, from maps (tokens, h, w)."""
    out = [maps[group].sum(dim=0) if group else torch.zeros_like(maps[0]) for group in token_groups]
    return torch.stack(out)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] (min to max), so words of a near-uniform model still show their shape."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
    return (maps - low[:, None, None]) / span[:, None, None]


def overlay(maps: torch.Tensor, size: tuple[int, int], image: torch.Tensor | None = None,
            alpha: float = 0.5) -> torch.Tensor:
    """(n, 3, H, W) in [0, 1]: maps (n, h, w) in [0, 1] upsampled to size (H, W), coloured (JET), blended
    over `image` (3, H, W) when given."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    frames = []
    for plane in up[:, 0].numpy():
        rgb = cv2.applyColorMap((plane * 255).round().astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
        frames.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0)
    heat = torch.stack(frames)
    if image is None:
        return heat
    return (alpha * heat + (1 - alpha) * image[None].float()).clamp(0, 1)
