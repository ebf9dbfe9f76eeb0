"""Inpainting encode with ComfyUI's semantics (its VAEEncodeForInpaint), for imported ComfyUI workflows.

Why a node apart from `diffusion.vae_encode_inpaint` (which mirrors diffusers' inpaint pipeline): ComfyUI
prepares the pixels differently, and a workflow's users expect its result. Step for step, as ComfyUI's
`nodes.py` does it:
1. the mask is resized (bilinear) to the image;
2. image and mask are cut to multiples of 8, centred (the odd pixels split between the sides);
3. the noise mask is the rounded mask grown by `grow_mask_by` (a box filter of that size, clamped to
   1, so a pixel near a masked one is repainted too and the seam falls inside the repainted area);
4. the pixels under the rounded (ungrown) mask are set to mid-grey 0.5, the rest kept;
5. the VAE encodes the result (the latent mean: deterministic, no seed);
6. the noise mask goes to the latent grid as ComfyUI's sampler brings it there (bilinear).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

from nodegraph_core.types import Image, Mask
from pydantic import Field

from nodegraph.api import NodeContext, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.types import Latents, VaeHandle

if TYPE_CHECKING:
    import torch

SCALE = 8  # pixels per latent cell of the SD/SDXL VAEs


def prepare(pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(blanked pixels to encode, pixel-size noise mask): steps 1-4 above, on (B, 3, H, W) / (B, 1, h, w)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    h, w = int(pixels.shape[-2]), int(pixels.shape[-1])
    ch, cw = (h // SCALE) * SCALE, (w // SCALE) * SCALE
    mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=(h, w), mode="bilinear")
    pixels = pixels.clone()
    if (h, w) != (ch, cw):
        top, left = (h % SCALE) // 2, (w % SCALE) // 2
        pixels = pixels[:, :, top:top + ch, left:left + cw]
        mask = mask[:, :, top:top + ch, left:left + cw]
    if grow_mask_by == 0:
        grown = mask
    else:
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
        padding = math.ceil((grow_mask_by - 1) / 2)
        grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
    keep = 1.0 - mask.round()
    pixels = (pixels - 0.5) * keep + 0.5
    return pixels, grown[:, :, :ch, :cw].round()


@node("diffusion.vae_encode_for_inpaint", version="1.0.0", facts=family_facts.vae_encode_facts)
def vae_encode_for_inpaint(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The VAE")],
    image: Annotated[Image, Field(description="Images to inpaint (cut to multiples of 8, centred)")],
    mask: Annotated[Mask, Field(description="Mask, 1 (white) = repaint; resized to the image")],
    grow_mask_by: Annotated[int, Field(ge=0, le=64, description="Grow the noise mask by this many pixels "
                                                                "(a box of this size), for seamless edges")]
    = 6,
) -> Latents:
    """Encode an image for inpainting as ComfyUI's VAEEncodeForInpaint: masked pixels blanked to grey.

    The latents carry the grown noise mask; a plain (4-channel) model then repaints only there."""
    import torch

    from nodegraph_diffusion.loading import use_vae
    from nodegraph_diffusion.sampling import encode

    pixels, noise_mask = prepare(image.pixels, mask.pixels, grow_mask_by)
    with use_vae(ctx, vae) as model:
        samples = encode(model, pixels, None, "mean")
    h, w = samples.shape[-2:]
    latent_mask = torch.nn.functional.interpolate(noise_mask, size=(h, w), mode="bilinear")
    if latent_mask.shape[0] < samples.shape[0]:
        latent_mask = latent_mask.repeat(math.ceil(samples.shape[0] / latent_mask.shape[0]), 1, 1, 1)
    return Latents(samples, latent_mask[: samples.shape[0]].contiguous())
