"""The VAE's side of the pipelines' arithmetic: latents to pixels and back, operation for operation.

Kept apart from the denoising loop (sampling.py re-exports these names); the fp16 overflow retry
(vae_upcast.py) and the out-of-memory fallback (oom_fallback.py) call these.
"""

from __future__ import annotations

from typing import Any

import torch


def decode(vae: Any, latents: torch.Tensor, tiled: bool = False,
           tile_size: int | None = None) -> torch.Tensor:
    """Latents -> pixels (B, 3, H, W) in [0, 1], float32 on CPU, with the pipeline's arithmetic.

    `vae.decode(latents / scaling_factor + shift_factor)` (the shift only for VAEs whose config has
    one: SD3's, Flux's; the SD VAEs have none) then `(x * 0.5 + 0.5).clamp(0, 1)` (VaeImageProcessor's
    denormalize). Tiled decoding uses diffusers' own `tiled_decode` (tile size in pixels).
    """
    return postprocess(decode_raw(vae, latents, tiled, tile_size))


def decode_raw(vae: Any, latents: torch.Tensor, tiled: bool = False,
               tile_size: int | None = None) -> torch.Tensor:
    """The VAE's own output for scaled latents, in [-1, 1] nominally, in its dtype and on its device."""
    param = next(vae.parameters())
    z = latents.to(device=param.device, dtype=param.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:  # as the SD3/Flux pipelines: (latents / scaling_factor) + shift_factor
        z = z + shift
    with torch.no_grad():
        if tiled:
            from nodegraph_diffusion.vae_tiling import tiled_decode

            return tiled_decode(vae, z, tile_size)
        return vae.decode(z, return_dict=False)[0]


def postprocess(image: torch.Tensor) -> torch.Tensor:
    """VaeImageProcessor's denormalize: [-1, 1] -> [0, 1], clamped, float32 on CPU."""
    return (image * 0.5 + 0.5).clamp(0, 1).to(device="cpu", dtype=torch.float32)


def encode(
    vae: Any,
    pixels: torch.Tensor,
    generator: torch.Generator | None = None,
    mode: str = "sample",
    scaled: bool = True,
) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [0, 1] -> scaled latents, as the img2img pipelines do.

    `VaeImageProcessor` normalises to [-1, 1] (`2x - 1`); the latent distribution is sampled with
    `generator` (`mode="sample"`) or its mean is taken (`mode="mean"`); times `scaling_factor` (with
    `scaled=False` not: the image latents InstructPix2Pix UNets read are the unscaled mode).
    The pixels go in channels-last, as the processor leaves a PIL/numpy image (an (H, W, C) array
    permuted): CPU convolutions sum in another order on the other layout (1e-5 off, measured).
    """
    param = next(vae.parameters())
    image = (2.0 * pixels - 1.0).contiguous(memory_format=torch.channels_last)
    image = image.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    latents = dist.sample(generator) if mode == "sample" else dist.mode()
    if not scaled:  # StableDiffusionInstructPix2PixPipeline.prepare_image_latents: the mode as it is
        return latents.to(device="cpu", dtype=torch.float32)
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:  # the SD3/Flux img2img pipelines: (latents - shift_factor) * scaling_factor
        return ((latents - shift) * vae.config.scaling_factor).to(device="cpu", dtype=torch.float32)
    return (vae.config.scaling_factor * latents).to(device="cpu", dtype=torch.float32)
