"""Shared helpers for the sampling/VAE exactness tests: tiny components, schedulers, both sides."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from nodegraph_diffusion.sampling import LoopInput, draw_noise, make_generator, run_loop
from nodegraph_diffusion.tiny import SD15_SCHEDULER_CONFIG, build_tiny_components

SCHEDULERS: dict[str, Any] = {
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "lms": LMSDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
    "heun": HeunDiscreteScheduler,
}


def scheduler(name: str) -> Any:
    """A fresh scheduler over SD1.5's scheduler config."""
    return SCHEDULERS[name].from_config(SD15_SCHEDULER_CONFIG)


def components() -> dict[str, Any]:
    return build_tiny_components(seed=0)


def embeds(seed: int, batch: int = 1) -> torch.Tensor:
    """Random prompt embeddings (batch, 77, 32) standing in for encoded text."""
    return torch.randn((batch, 77, 32), generator=torch.Generator().manual_seed(seed))


def ours(
    comps: dict[str, Any],
    sched: str,
    seed: int,
    steps: int,
    cfg: float,
    latents: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    **kwargs: Any,
) -> torch.Tensor:
    """Run our loop the way the sampler node does: one CPU generator, noise first."""
    generator = make_generator(seed)
    noise = draw_noise(latents.shape, generator)
    req = LoopInput(
        unet=comps["unet"],
        scheduler=scheduler(sched),
        positive=positive,
        negative=negative,
        latents=latents,
        noise=noise,
        generator=generator,
        steps=steps,
        cfg=cfg,
        **kwargs,
    )
    return run_loop(req).latents


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())
