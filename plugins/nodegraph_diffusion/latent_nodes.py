"""Latent nodes: empty latents, seeded noise, inpaint masks, latent upscaling (hires fix)."""

from __future__ import annotations

from typing import Annotated, Literal

from nodegraph_core.types import Mask
from pydantic import Field

from nodegraph.api import InputError, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.types import Latents, Noise, UNetHandle

# A catalogue module: only light imports at the top, so listing and validating never import torch;
# torch and sampling are imported inside the node bodies, on first call (docs/plugins.md).
LATENT_CHANNELS = 4  # SD1.x/2.x VAEs
VAE_SCALE = 8  # pixels per latent cell (sampling.VAE_SCALE)


# 1.1: `unet` gives the model family's latent channels (SD3/Flux: 16)
@node("diffusion.empty_latents", version="1.1.0", facts=family_facts.empty_facts)
def empty_latents(
    width: Annotated[int, Field(ge=8, le=8192, multiple_of=8, description="Image width in pixels (multiple of 8)")]
    = 512,
    height: Annotated[int, Field(ge=8, le=8192, multiple_of=8,
                                 description="Image height in pixels (multiple of 8)")] = 512,
    batch: Annotated[int, Field(ge=1, le=64, description="Images per batch")] = 1,
    unet: Annotated[UNetHandle | None, Field(description="The model they are for: its family's latent "
                                                         "channels (unset: 4, the SD1.x/SDXL VAEs')")] = None,
) -> Latents:
    """Zero latents of a given image size: the starting point of text-to-image."""
    import torch

    channels, scale = LATENT_CHANNELS, VAE_SCALE
    if unet is not None:
        from nodegraph_diffusion.families import family_named

        try:
            family = family_named(unet.source.family)
        except KeyError as exc:
            raise InputError(str(exc.args[0]), field="unet") from exc
        channels, scale = family.latent_channels, family.vae_scale
    return Latents(torch.zeros(batch, channels, height // scale, width // scale))


@node("diffusion.noise", version="1.0.0")
def noise(
    seed: Annotated[int, Field(ge=0, le=2**63 - 1, description="Random seed")],
    latents_like: Annotated[Latents, Field(description="Latents whose shape the noise takes")],
    device: Annotated[Literal["cpu", "cuda"], Field(
        description="Where the generator runs; cpu (default) gives the same image on every device")] = "cpu",
) -> Noise:
    """Gaussian noise from a seeded generator, drawn like the diffusers pipelines (one draw per batch)."""
    import torch

    from nodegraph_diffusion.sampling import draw_noise, make_generator

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested for noise but CUDA is not available", field="device")
    generator = make_generator(seed, device)
    samples = draw_noise(latents_like.samples.shape, generator, device=device).to("cpu")
    return Noise(samples, seed)


@node("diffusion.set_mask", version="1.0.0")
def set_mask(
    latents: Annotated[Latents, Field(description="Latents to inpaint (usually an encoded image)")],
    mask: Annotated[Mask, Field(description="Pixel mask, 1 (white) = repaint")],
    binarize: Annotated[bool, Field(description="Threshold at 0.5 like diffusers' inpaint pipeline")] = True,
) -> Latents:
    """Attach an inpainting mask to latents (resized to the latent grid like the inpaint pipeline)."""
    from nodegraph_diffusion.sampling import latent_mask

    h, w = latents.samples.shape[-2:]
    mh, mw = mask.pixels.shape[-2:]
    if (mh, mw) != (h * VAE_SCALE, w * VAE_SCALE):
        raise InputError(f"mask is {mw}x{mh} pixels but the latents are for {w * VAE_SCALE}x{h * VAE_SCALE}; "
                         "resize the mask first", field="mask")
    return Latents(latents.samples, latent_mask(mask.pixels, h, w, binarize), dict(latents.extras),
                   latents.drawn, latents.family)


@node("diffusion.latent_upscale", version="1.0.0")
def latent_upscale(
    latents: Annotated[Latents, Field(description="Latents to resize")],
    scale: Annotated[float | None, Field(gt=0, le=8, description="Factor; ignored when width/height are set")]
    = 2.0,
    width: Annotated[int | None, Field(ge=8, le=8192, multiple_of=8,
                                       description="Target width in pixels (overrides scale)")] = None,
    height: Annotated[int | None, Field(ge=8, le=8192, multiple_of=8,
                                        description="Target height in pixels (overrides scale)")] = None,
    method: Annotated[Literal["nearest-exact", "nearest", "bilinear", "bicubic", "area"],
                      Field(description="torch interpolation mode")] = "nearest-exact",
) -> Latents:
    """Resize latents (the first half of a hires fix: upscale, then sample again with denoise < 1)."""
    import torch

    h, w = latents.samples.shape[-2:]
    if width is not None or height is not None:
        size = ((height or h * VAE_SCALE) // VAE_SCALE, (width or w * VAE_SCALE) // VAE_SCALE)
    elif scale is not None:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        raise InputError("give a scale or a width/height", field="scale")
    align = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    samples = torch.nn.functional.interpolate(latents.samples, size=size, mode=method, **align)
    mask = latents.noise_mask
    if mask is not None:
        mask = torch.nn.functional.interpolate(mask, size=size, mode="nearest")
    return Latents(samples, mask, family=latents.family)
