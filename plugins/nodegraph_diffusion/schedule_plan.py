"""Which timesteps one sampler run covers, and the latents it starts from.

Split out of the loop (sampling.py) because the sampler node also plans a throwaway schedule to count
UNet calls for its progress bar, and because the img2img/inpaint arithmetic of the start (`add_noise`,
or a flow-matching scheduler's `scale_noise`) is shared with the mask blending in the loop. Scheduler
maths is never re-implemented here; we only call the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class SamplingError(ValueError):
    """A request the loop cannot honour (bad step range, scheduler lacking a feature)."""


@dataclass(frozen=True)
class Schedule:
    """Which part of the scheduler's timesteps one sampler run covers."""

    timesteps: torch.Tensor  # the slice this run executes
    first_index: int  # index of timesteps[0] in the full schedule
    total: int  # length of the full schedule (UNet calls for all steps)
    full_denoise: bool  # starts at the very first timestep (latents become pure noise)
    reaches_end: bool  # ends at the last timestep


def plan_schedule(
    scheduler: Any,
    steps: int,
    device: torch.device,
    denoise: float = 1.0,
    start_step: int = 0,
    end_step: int | None = None,
    set_timesteps: Callable[[Any, int, torch.device], None] | None = None,
    skipped_steps: Callable[[int, float], int] | None = None,
) -> Schedule:
    """Set the scheduler's timesteps and pick the slice to run.

    `denoise` works like the img2img pipelines' `strength`: the first `steps - int(steps * denoise)`
    steps are skipped. `start_step`/`end_step` (KSamplerAdvanced style) cut further; the later start
    wins. Calls `set_begin_index` like the img2img pipeline, so index-keeping schedulers start right.
    `set_timesteps(scheduler, steps, device)` replaces the plain `scheduler.set_timesteps(steps,
    device=device)` (a model family's own way: flow-matching sigmas, `mu`; see families/base.py);
    `skipped_steps(steps, denoise)` replaces the SD pipelines' count of skipped steps (the SD3/Flux
    img2img pipelines round `steps * strength` later, see `ModelFamily.skipped_steps`).
    """
    if steps < 1:
        raise SamplingError(f"steps must be at least 1, got {steps}")
    if set_timesteps is None:
        scheduler.set_timesteps(steps, device=device)
    else:
        set_timesteps(scheduler, steps, device)
    full = scheduler.timesteps
    order = int(getattr(scheduler, "order", 1))
    if skipped_steps is None:
        skipped = steps - min(int(steps * denoise), steps)
    else:
        skipped = skipped_steps(steps, denoise)
    begin = max(skipped, int(start_step))
    end = steps if end_step is None else min(int(end_step), steps)
    if begin >= end:
        raise SamplingError(
            f"nothing to run: start step {begin} (denoise {denoise}, start_step {start_step}) is not before "
            f"end step {end} of {steps}"
        )
    first = begin * order
    last = len(full) if end == steps else end * order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    return Schedule(full[first:last], first, len(full), begin == 0, end == steps)


def noised_latents(
    scheduler: Any,
    latents: torch.Tensor,
    noise: torch.Tensor,
    schedule: Schedule,
    add_noise: bool = True,
) -> torch.Tensor:
    """The loop's starting latents.

    - full denoise (from step 0): pure `noise * init_noise_sigma` (txt2img and inpaint pipelines); a
      flow-matching scheduler has no `init_noise_sigma`: the noise itself (SD3/Flux pipelines);
    - later start: `scheduler.add_noise(latents, noise, t_first)` (img2img pipeline with strength < 1),
      or a flow-matching scheduler's `scale_noise(latents, t_first, noise)` (SD3/Flux img2img);
    - `add_noise=False`: the latents as given (they carry leftover noise from an earlier sampler).
    """
    if not add_noise:
        return latents
    if schedule.full_denoise:
        sigma = getattr(scheduler, "init_noise_sigma", None)
        return noise if sigma is None else noise * sigma
    return renoised(scheduler, latents, noise, schedule.timesteps[:1].repeat(latents.shape[0]))


def renoised(scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`latents` noised to timestep(s) `t`: `add_noise`, or a flow-matching scheduler's `scale_noise`
    (which the SD3/Flux img2img and inpaint pipelines call, with these arguments in this order)."""
    if not hasattr(scheduler, "add_noise") and hasattr(scheduler, "scale_noise"):
        return scheduler.scale_noise(latents, t, noise)
    return scheduler.add_noise(latents, noise, t)
