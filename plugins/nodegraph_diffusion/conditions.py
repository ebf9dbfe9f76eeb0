"""The protocol between the sampler and everything that steers it.

ControlNet units, T2I-Adapter units, IP-Adapter units and attention hooks are all *conditions*: the
sampler activates each one once before the loop (models materialised, images prepared, attention
processors installed), asks each for extra UNet arguments at every step, and closes every one in a
`finally`, also when sampling fails. This is what lets one sampler combine any number of them.

Optional hooks (an active unit defines them only if it needs them; the sampler calls them through
`initial_latents`, `after_step` and `collect_results` below, so units without them cost nothing):
- `prepare_latents(latents) -> latents | None`: once, with the initial noisy latents (B, C, h, w),
  before the loop (prompt-to-prompt makes every batch item start from item 0's noise).
- `after_step(step, latents) -> latents | None`: after each scheduler step, with the new latents
  (B, C, h, w), not CFG-doubled (prompt-to-prompt's local blend mixes the edit into the source here).
- `after_guidance(step, guided, raw, latents) -> guided | None`: after classifier-free guidance, with
  the guided prediction, the denoiser's raw (CFG-batched) one and the un-doubled latents; may call the
  denoiser again (SD3.5's skip-layer guidance adds a third call, skip_layers.py).
- `guidance(cfg, do_cfg) -> Guidance | None` (on the `Condition` itself, before activation): how the
  loop batches and combines the denoiser's predictions instead of classifier-free guidance
  (InstructPix2Pix's three branches, instruct_pix2pix.py; guidance.py says what a strategy is).
- `before_noise(draws) -> Condition` (on the `Condition` itself): the random draws it takes from the
  sampler's generator before the initial noise (`draw_before_noise` below).
- `results() -> dict`: after the loop succeeded; merged into the output `Latents.extras`, so side
  results (e.g. captured attention maps) are cached *with* the sampler output and stay correct when
  the sampler is served from the cache instead of re-run.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nodegraph.api import NodeContext


@dataclass
class SamplingSetup:
    """What a condition needs to know about the sampling run it joins."""

    unet: Any  # the materialised UNet2DConditionModel (pinned for the whole run)
    device: Any
    dtype: Any
    batch_size: int  # images per CFG branch
    do_cfg: bool  # whether the UNet input is [uncond, cond] concatenated
    height: int  # pixels
    width: int  # pixels
    timesteps: Any  # the scheduler's timesteps for this run (after start/end trimming)
    num_steps: int  # total steps of the schedule (before trimming)
    first_step: int  # index of timesteps[0] in the full schedule
    prompt_embeds: Any  # (2B or B, tokens, dim) as passed to the UNet
    generator: Any = None
    # the model family's extra denoiser inputs (SDXL: text_embeds, time_ids; batched like prompt_embeds),
    # which a ControlNet of that family takes too; None for SD1.x
    added_cond_kwargs: dict[str, Any] | None = None
    # the model family (families/base.py ModelFamily), for a condition that calls the denoiser itself
    family: Any = None
    # the loop's guidance strategy (guidance.py), None in a loop that takes no strategy from conditions
    # (the k-sampler's); `do_cfg` is then `guidance.branches > 1`, and the batch has `branches` copies
    guidance: Any = None


@dataclass
class StepInput:
    """One UNet call of the loop."""

    step_index: int  # index in the full schedule
    timestep: Any
    latent_model_input: Any  # already scaled by the scheduler, CFG-doubled when do_cfg
    encoder_hidden_states: Any


@runtime_checkable
class ActiveCondition(Protocol):
    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        """Extra UNet keyword arguments for this step.

        Known keys, merged by the sampler across conditions in list order:
        `down_block_additional_residuals` (list, summed elementwise), `mid_block_additional_residual`
        (summed), `down_intrablock_additional_residuals` (list, summed), `cross_attention_kwargs`
        and `added_cond_kwargs` (dicts, merged). Return {} to stay out of this step.
        """
        ...

    def close(self) -> None:
        """Undo whatever `activate` installed (attention processors, adapters). Must not raise."""
        ...


def initial_latents(units: list[Any], latents: Any) -> Any:
    """Pass the initial latents through every unit's optional `prepare_latents`, in list order."""
    for unit in units:
        hook = getattr(unit, "prepare_latents", None)
        if hook is not None:
            out = hook(latents)
            latents = latents if out is None else out
    return latents


def after_step(units: list[Any], step: StepInput, latents: Any) -> Any:
    """Pass the latents after a scheduler step through every unit's optional `after_step`, in list order."""
    for unit in units:
        hook = getattr(unit, "after_step", None)
        if hook is not None:
            out = hook(step, latents)
            latents = latents if out is None else out
    return latents


def after_guidance(units: list[Any], step: StepInput, guided: Any, raw: Any, latents: Any) -> Any:
    """Pass the guided prediction through every unit's optional `after_guidance`, in list order."""
    for unit in units:
        hook = getattr(unit, "after_guidance", None)
        if hook is not None:
            out = hook(step, guided, raw, latents)
            guided = guided if out is None else out
    return guided


def collect_results(units: list[Any]) -> dict[str, Any]:
    """Merge every unit's optional `results()` into one dict for `Latents.extras` (later keys win)."""
    merged: dict[str, Any] = {}
    for unit in units:
        hook = getattr(unit, "results", None)
        if hook is not None:
            merged.update(hook())
    return merged


@dataclass(frozen=True)
class NoiseDraws:
    """The random streams a condition may draw from before the sampler draws its initial noise.

    Some pipelines take draws for a condition before the latents' noise: FluxControlNetPipeline samples
    the VAE encoding of each control image from the run's generator first (`generator`); the SD3
    ControlNet pipeline samples it from torch's global stream, which here is `side`, a second generator
    seeded like the first (the pipeline's pixels after `torch.manual_seed(seed)`)."""

    generator: Any  # the sampler's generator, before the initial noise
    side: Any  # a generator seeded with the same seed, for draws the pipelines take from the global RNG
    latent_shape: tuple[int, ...]  # (B, C, h, w) of the sampler's latents
    do_cfg: bool


def draw_before_noise(conditions: list[Any], draws: NoiseDraws) -> list[Any]:
    """Let each condition (in list order) take its pre-noise draws through its optional
    `before_noise(draws) -> Condition`; returns the conditions to sample with."""
    out = []
    for condition in conditions:
        hook = getattr(condition, "before_noise", None)
        out.append(condition if hook is None else hook(draws))
    return out


class Condition(abc.ABC):
    """A port value that can steer a sampler; produced by control/adapter/attention nodes.

    Subclass it (an ABC, so edge type checks follow subclassing) and implement `activate`.
    """

    # the models its maker read are used by the sampler that activates it: the engine's order groups
    # that sampler with them (fewer model swaps)
    __nodegraph_defers_models__ = True

    @abc.abstractmethod
    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        """Materialise models (via `ctx.resources`), prepare images, install hooks; return the live unit."""
