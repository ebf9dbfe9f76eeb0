"""How the loop batches the denoiser's input and combines its predictions: the guidance strategy.

Classifier-free guidance runs the denoiser on `[uncond, cond]` in one call and mixes the two halves
with the `cfg` scale. Some models guide differently: InstructPix2Pix runs three branches (text and
image, image only, neither) with separate text and image scales (instruct_pix2pix.py). The loop asks
the conditions for a strategy (`pick_guidance`: a condition's optional `guidance(cfg, do_cfg)` hook)
and otherwise uses `ClassifierFreeGuidance`, so it never asks what kind of condition it runs with.

A strategy says how many branches the batch has, orders the text states and the latents into them,
and combines the predictions, written operand for operand as the pipeline it mirrors does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from nodegraph.api import InputError
from nodegraph_diffusion.schedule_plan import SamplingError


@runtime_checkable
class Guidance(Protocol):
    """A guidance strategy for one sampler run (see the module docstring)."""

    @property
    def branches(self) -> int:
        """How many copies of the latent batch one denoiser call reads (1: no guidance)."""
        ...

    def embeds(self, positive: torch.Tensor, negative: torch.Tensor | None) -> torch.Tensor:
        """The text states of one denoiser call, `branches` batches stacked (both already batched)."""
        ...

    def expand(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents stacked into the branches, before the scheduler's `scale_model_input`."""
        ...

    def combine(self, noise_pred: torch.Tensor) -> torch.Tensor:
        """The guided prediction (one batch) from the denoiser's `branches`-batched one."""
        ...


def guided(noise_pred: torch.Tensor, cfg: float, do_cfg: bool) -> torch.Tensor:
    """Classifier-free guidance on a `[uncond, cond]` batch, written exactly as the pipelines do."""
    if not do_cfg:
        return noise_pred
    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
    return noise_pred_uncond + cfg * (noise_pred_text - noise_pred_uncond)


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """The SD pipelines' guidance: `[negative, positive]` in one call, `uncond + cfg * (text - uncond)`."""

    cfg: float
    on: bool

    @property
    def branches(self) -> int:
        return 2 if self.on else 1

    def embeds(self, positive: torch.Tensor, negative: torch.Tensor | None) -> torch.Tensor:
        if not self.on:
            return positive
        assert negative is not None
        return torch.cat([negative, positive])

    def expand(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([latents] * 2) if self.on else latents

    def combine(self, noise_pred: torch.Tensor) -> torch.Tensor:
        return guided(noise_pred, self.cfg, self.on)


def pick_guidance(conditions: Sequence[Any], cfg: float, do_cfg: bool) -> Guidance:
    """The strategy one condition asks for through its optional `guidance(cfg, do_cfg)` hook, else
    classifier-free guidance; two conditions that both change the guidance cannot be combined."""
    chosen: list[tuple[Any, Guidance]] = []
    for condition in conditions:
        hook = getattr(condition, "guidance", None)
        if callable(hook):
            strategy = hook(cfg, do_cfg)
            if strategy is not None:
                chosen.append((condition, strategy))
    if len(chosen) > 1:
        kinds = ", ".join(type(c).__name__ for c, _ in chosen)
        raise InputError(f"two conditions each set how the sampler guides ({kinds}): use one of them",
                         field="conditions")
    if not chosen:
        return ClassifierFreeGuidance(cfg, do_cfg)
    owner, strategy = chosen[0]
    # ControlNets, adapters and attention hooks batch their inputs as [uncond, cond]: with more
    # branches they would fail deep inside the UNet, so say it here (a condition that works with any
    # batch says so with `guidance_neutral = True`)
    others = [type(c).__name__ for c in conditions
              if c is not owner and not getattr(c, "guidance_neutral", False)]
    if strategy.branches > 2 and others:
        raise InputError(f"{type(owner).__name__} guides with {strategy.branches} branches per UNet call; "
                         f"{', '.join(others)} batch for classifier-free guidance's two and cannot join it: "
                         "use it alone in `conditions`", field="conditions")
    return strategy


def batch_embeds(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat text embeddings to the latent batch as the pipelines do for `num_images_per_prompt`."""
    return _per_latent(embeds, batch, "prompt embeddings")


def batch_pooled(pooled: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat pooled embeds (n, dim) to the latent batch as the SDXL pipeline does per prompt."""
    return _per_latent(pooled, batch, "pooled embeddings")


def _per_latent(values: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Each prompt's row repeated for its images, consecutively: the pipelines' `repeat(...).view(...)`
    (the same values, in the same order)."""
    if values.shape[0] == batch:
        return values
    if batch % values.shape[0] != 0:
        raise SamplingError(f"{values.shape[0]} {what} do not divide a batch of {batch} latents")
    return values.repeat_interleave(batch // values.shape[0], dim=0)
