"""Flux.1's side of the denoising loop, as small functions over diffusers' own helpers (`FluxPipeline`).

What differs from the UNet loop (sampling.py), each taken from diffusers rather than re-derived:
- latents are *packed*: (B, 16, h, w) -> (B, h/2 * w/2, 64), 2x2 patches as tokens
  (`FluxPipeline._pack_latents`/`_unpack_latents`); graph values stay unpacked, so the VAE nodes and
  latent tools see ordinary (B, C, h, w) latents;
- each image token has a position id (0, row, column) and each text token (0, 0, 0)
  (`_prepare_latent_image_ids`, the pipeline's zeros `text_ids`), which the transformer's RoPE reads;
- the flow-matching schedule: sigmas `linspace(1, 1/steps, steps)`, shifted by `mu` from the image's
  token count (`calculate_shift`) when the scheduler's config says `use_dynamic_shifting`;
- the transformer gets `timestep / 1000`, CLIP's pooled output and T5's states; guidance-distilled
  models (FLUX.1-dev: `guidance_embeds`) take the guidance scale as an input ("embedded guidance"),
  while true CFG (the pipeline's `true_cfg_scale` with a negative prompt) runs a second, *unbatched*
  call after the positive one: `neg + scale * (pos - neg)` (families/flux.py `denoise`).
families/flux.py calls these from the sampler's hooks; the same seed gives the pipeline's pixels.
"""

from __future__ import annotations

from typing import Any

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): the pipeline's 2x2 patch packing."""
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def unpack(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, tokens, 4C) -> (B, C, height, width) for latent `height`/`width` (the pipeline's unpacking,
    told the pixel size with a VAE scale of 1)."""
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    return FluxPipeline._unpack_latents(packed, height, width, 1)


def image_ids(height: int, width: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Position ids (tokens, 3) of the packed image tokens of latents `height` x `width`."""
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    return FluxPipeline._prepare_latent_image_ids(1, height // 2, width // 2, device, dtype)


def set_flux_timesteps(scheduler: Any, steps: int, tokens: int, device: Any) -> torch.Tensor:
    """Set the pipeline's flow-matching schedule on `scheduler` for an image of `tokens` packed tokens."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    config = scheduler.config
    sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
    mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    return timesteps
