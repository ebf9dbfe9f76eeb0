"""Nodes of the sigma-space sampler: `diffusion.k_sampler` (a KSamplerSpec for `diffusion.sample`) and
the regional-conditioning nodes (ComfyUI's ConditioningSetArea / SetAreaPercentage / SetAreaStrength /
Combine / ZeroOut), whose output the k-sampler path evaluates area by area (regions.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import FactsRequest, InputError, node
from nodegraph_diffusion.family_facts import Facts, passthrough
from nodegraph_diffusion.types import (
    Area,
    Conditioning,
    KSamplerSpec,
    RegionalConditioning,
    RegionEntry,
    SchedulerSpec,
    region_entries,
)

# the sampler and schedule names (k_sampling.SAMPLERS, sigmas.SCHEDULER_NAMES), repeated here so that
# validation needs no torch; tests/diffusion/test_k_sampling.py keeps the copies equal
K_SAMPLERS = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddim",
)
K_SCHEDULES = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")

AnyConditioning = Conditioning | RegionalConditioning


def _pass_conditioning(req: FactsRequest) -> Facts:
    return passthrough(req, {"out": "conditioning"})


def _pass_first(req: FactsRequest) -> Facts:
    return passthrough(req, {"out": "first"})


@node("diffusion.k_sampler", version="1.0.0")
def k_sampler(
    model_scheduler: Annotated[
        SchedulerSpec,
        Field(description="The model's scheduler (its beta schedule gives the training sigmas)"),
    ],
    sampler: Annotated[
        str, Field(description="k-diffusion sampler by its ComfyUI name: " + ", ".join(K_SAMPLERS))
    ] = "euler",
    scheduler: Annotated[
        str, Field(description="ComfyUI sigma schedule: " + ", ".join(K_SCHEDULES))
    ] = "normal",
) -> KSamplerSpec:
    """A sigma-space sampler with ComfyUI's KSampler semantics, for diffusion.sample's `scheduler`.

    k-diffusion's sampler functions on ComfyUI's sigma tables, with ComfyUI's denoiser, CFG, noise
    and denoise rule (instead of a diffusers scheduler)."""
    if sampler not in K_SAMPLERS:
        raise InputError(f"unknown k-sampler '{sampler}' (known: {', '.join(K_SAMPLERS)})", field="sampler")
    if scheduler not in K_SCHEDULES:
        raise InputError(
            f"unknown sigma schedule '{scheduler}' (known: {', '.join(K_SCHEDULES)})", field="scheduler"
        )
    return KSamplerSpec(sampler, scheduler, model_scheduler.base_config)


@node("diffusion.set_area", version="1.0.0", facts=_pass_conditioning)
def set_area(
    conditioning: Annotated[AnyConditioning, Field(description="The prompt(s) to confine to the area")],
    width: Annotated[float, Field(ge=0, description="Area width: pixels, or a fraction with percentage")],
    height: Annotated[float, Field(ge=0, description="Area height: pixels, or a fraction with percentage")],
    x: Annotated[float, Field(ge=0, description="Left edge: pixels, or a fraction with percentage")] = 0,
    y: Annotated[float, Field(ge=0, description="Top edge: pixels, or a fraction with percentage")] = 0,
    strength: Annotated[float, Field(ge=0, le=10, description="Weight of the area's prediction")] = 1.0,
    percentage: Annotated[
        bool, Field(description="Sizes are fractions (0..1) of the image, not pixels")
    ] = False,
) -> RegionalConditioning:
    """Confine a prompt to a rectangle (ComfyUI's ConditioningSetArea and ...Percentage).

    Combine it with a full-image prompt (diffusion.combine) and sample with a diffusion.k_sampler."""
    if percentage:
        if max(width, height, x, y) > 1:
            raise InputError(
                "with percentage, width, height, x and y are fractions between 0 and 1", field="width"
            )
        area = Area(height, width, y, x, True)
    else:  # pixels -> latent cells, as ComfyUI's `// 8`
        area = Area(int(height) // 8, int(width) // 8, int(y) // 8, int(x) // 8)
    return RegionalConditioning(
        tuple(RegionEntry(e.cond, area, strength) for e in region_entries(conditioning))
    )


@node("diffusion.set_area_strength", version="1.0.0", facts=_pass_conditioning)
def set_area_strength(
    conditioning: Annotated[AnyConditioning, Field(description="The prompt(s) to weight")],
    strength: Annotated[float, Field(ge=0, le=10, description="Weight of the prompt's prediction")] = 1.0,
) -> RegionalConditioning:
    """Set the weight of every entry (ComfyUI's ConditioningSetAreaStrength)."""
    return RegionalConditioning(
        tuple(RegionEntry(e.cond, e.area, strength) for e in region_entries(conditioning))
    )


@node("diffusion.combine", version="1.0.0", facts=_pass_first)
def combine(
    first: Annotated[AnyConditioning, Field(description="Entries that come first")],
    second: Annotated[AnyConditioning, Field(description="Entries appended after them")],
) -> RegionalConditioning:
    """Join two conditionings into one list of entries (ComfyUI's ConditioningCombine).

    The k-sampler evaluates each entry on its area and averages them by weight."""
    return RegionalConditioning((*region_entries(first), *region_entries(second)))


@node("diffusion.zero_out", version="1.0.0", facts=_pass_conditioning)
def zero_out(
    conditioning: Annotated[Conditioning, Field(description="The prompt encoding to zero")],
) -> Conditioning:
    """The same conditioning with all-zero embeddings and pooled embeds (ComfyUI's ConditioningZeroOut).

    A 'no prompt at all' negative, unlike the encoding of an empty prompt."""
    import dataclasses

    import torch

    def zeros(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else torch.zeros_like(value)

    # `empty` (what pads a shorter prompt) is zeroed too: zeros padded with zeros, as ComfyUI repeats them
    return dataclasses.replace(
        conditioning,
        embeds=torch.zeros_like(conditioning.embeds),
        pooled=zeros(conditioning.pooled),
        empty=zeros(conditioning.empty),
    )
