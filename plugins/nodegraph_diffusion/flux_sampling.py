"""Flux.1's denoising loop, as small functions over diffusers objects, mirroring `FluxPipeline`.

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
  call after the positive one: `neg + scale * (pos - neg)`.
Same seed, same operations, same order: CPU fp32 pixels equal the pipeline's to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_GUIDANCE = 3.5  # FluxPipeline's guidance_scale default


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


@dataclass
class FluxText:
    """One prompt's encoding, on the compute device: T5 states (B, tokens, d), CLIP pooled (B, d)."""

    embeds: torch.Tensor
    pooled: torch.Tensor


@dataclass
class FluxLoopInput:
    """Everything one Flux run needs (tensors already on the transformer's device and dtype)."""

    transformer: Any
    scheduler: Any
    positive: FluxText
    negative: FluxText | None  # with cfg > 1: true CFG (a second call per step)
    noise: torch.Tensor  # (B, C, h, w), unpacked
    steps: int
    guidance: float = DEFAULT_GUIDANCE  # embedded guidance, for models with guidance_embeds
    cfg: float = 1.0  # true CFG scale (the pipeline's true_cfg_scale)


def _call(transformer: Any, latents: torch.Tensor, t: torch.Tensor, guidance: torch.Tensor | None,
          text: FluxText, img_ids: torch.Tensor, label: str) -> torch.Tensor:
    timestep = t.expand(latents.shape[0]).to(latents.dtype)
    text_ids = torch.zeros(text.embeds.shape[1], 3).to(device=latents.device, dtype=text.embeds.dtype)
    with transformer.cache_context(label):
        return transformer(hidden_states=latents, timestep=timestep / 1000, guidance=guidance,
                           pooled_projections=text.pooled, encoder_hidden_states=text.embeds,
                           txt_ids=text_ids, img_ids=img_ids, joint_attention_kwargs={},
                           return_dict=False)[0]


@torch.no_grad()
def run_flux_loop(req: FluxLoopInput, on_step: Callable[[int], None] | None = None,
                  check_cancelled: Callable[[], None] | None = None) -> torch.Tensor:
    """Denoise `req.noise` as `FluxPipeline.__call__` does; returns unpacked latents (B, C, h, w)."""
    transformer, scheduler = req.transformer, req.scheduler
    _, _, height, width = req.noise.shape
    latents = pack(req.noise)
    device = latents.device
    ids = image_ids(height, width, device, req.positive.embeds.dtype)
    timesteps = set_flux_timesteps(scheduler, req.steps, int(latents.shape[1]), device)
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full([1], req.guidance, device=device, dtype=torch.float32).expand(latents.shape[0])
    true_cfg = req.negative is not None and req.cfg > 1
    scheduler.set_begin_index(0)
    for i, t in enumerate(timesteps):
        if check_cancelled is not None:
            check_cancelled()
        noise_pred = _call(transformer, latents, t, guidance, req.positive, ids, "cond")
        if true_cfg:
            assert req.negative is not None
            neg = _call(transformer, latents, t, guidance, req.negative, ids, "uncond")
            noise_pred = neg + req.cfg * (noise_pred - neg)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i)
    return unpack(latents, height, width)
