"""A cheap preview of latents while the sampler runs: no VAE decode, any latent channel count.

The first three latent channels of the first image, each stretched to 0..255 over its own range,
as a small RGB array (h x w x 3, uint8; 1/8 of the image size for an SD-family VAE). Crude colours,
but the composition shows from the early steps on, at a cost far below a decode per step; a
family-specific latent-to-RGB mapping can replace it without changing the hook.
"""

from __future__ import annotations

from typing import Any


def latent_preview(latents: Any) -> Any:
    """(h, w, 3) uint8 numpy array of `latents` (B, C, h, w), channels beyond three ignored."""
    import torch

    x = latents[0, :3].detach().float().cpu()
    if x.shape[0] < 3:
        x = x[:1].expand(3, -1, -1)
    low = x.amin(dim=(1, 2), keepdim=True)
    span = (x.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-6)
    return ((x - low) / span * 255).round().to(dtype=torch.uint8).permute(1, 2, 0).numpy()
