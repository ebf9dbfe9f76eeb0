"""The denoising loop, as small functions over diffusers objects (UNet, scheduler, VAE).

Every function here mirrors, operation for operation, what diffusers' Stable Diffusion pipelines do
(`StableDiffusionPipeline`, `...Img2ImgPipeline`, `...InpaintPipeline`), so that the same seed gives
the same tensors to the last bit on CPU fp32: the same random-number draw order (one CPU generator:
initial noise first, then the scheduler's own draws), the same CFG batching (`[uncond, cond]` in one
UNet call), the same `scale_model_input` / `step` / `add_noise` calls. Scheduler maths is never
re-implemented here; we only call the scheduler.

Steps are counted in *inference steps* (what users type); a scheduler of order 2 (Heun) runs two
UNet calls per step, so step `k` starts at index `k * order` of `scheduler.timesteps`.

The pieces live apart, one job each: the schedule and the starting latents (schedule_plan.py), how the
conditions' per-step UNet arguments merge (step_kwargs.py), how the batch is guided (guidance.py: CFG,
or a condition's own strategy such as InstructPix2Pix's three branches). Their names are re-exported
here, where the rest of the pack has always imported them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from nodegraph_diffusion.conditions import (
    SamplingSetup,
    StepInput,
    after_guidance,
    after_step,
    collect_results,
    initial_latents,
)
from nodegraph_diffusion.guidance import batch_embeds, batch_pooled, guided, pick_guidance  # noqa: F401
from nodegraph_diffusion.schedule_plan import (  # noqa: F401 - re-exported
    SamplingError,
    Schedule,
    noised_latents,
    plan_schedule,
    renoised,
)
from nodegraph_diffusion.step_kwargs import (  # noqa: F401 - re-exported
    AGREED,
    DICT_MERGED,
    LIST_SUMMED,
    TENSOR_SUMMED,
    merge_step_kwargs,
)
from nodegraph_diffusion.vae_math import decode, decode_raw, encode, postprocess  # noqa: F401 - re-exported

VAE_SCALE = 8  # pixels per latent cell for SD-family VAEs (4-level AutoencoderKL)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh seeded generator; CPU by default so a seed gives the same image on every device."""
    return torch.Generator(device=device).manual_seed(int(seed))


def draw_noise(
    shape: Sequence[int],
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise the way the pipelines draw it (`randn_tensor`: one draw for the whole batch)."""
    return randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)


def extra_step_kwargs(scheduler: Any, generator: torch.Generator | None, eta: float = 0.0) -> dict[str, Any]:
    """`generator`/`eta` for `scheduler.step`, only if it accepts them (as the pipelines' helper does)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def latent_mask(mask: torch.Tensor, height: int, width: int, binarize: bool = True) -> torch.Tensor:
    """A pixel mask (B, 1, H, W) in [0, 1] -> latent size, as the inpaint pipeline prepares it.

    `VaeImageProcessor(do_binarize=True)` sets values < 0.5 to 0 and the rest to 1; then
    `F.interpolate(mask, size=(h, w))` (nearest) brings it to the latent grid.
    """
    mask = mask.to(torch.float32)
    if binarize:
        mask = mask.clone()
        mask[mask < 0.5] = 0
        mask[mask >= 0.5] = 1
    return torch.nn.functional.interpolate(mask, size=(height, width))


@dataclass
class LoopInput:
    """Everything one run of the loop needs (tensors already on the compute device and dtype)."""

    unet: Any
    scheduler: Any
    positive: torch.Tensor  # (B or 1, tokens, dim)
    negative: torch.Tensor | None  # None = no classifier-free guidance
    latents: torch.Tensor  # (B, C, h, w): clean latents (img2img / inpaint source) or leftover state
    noise: torch.Tensor  # (B, C, h, w)
    generator: torch.Generator | None  # for the scheduler's own draws (ancestral samplers)
    steps: int
    cfg: float = 7.5
    denoise: float = 1.0
    start_step: int = 0
    end_step: int | None = None
    add_noise: bool = True
    return_with_leftover_noise: bool = True
    mask: torch.Tensor | None = None  # (B or 1, 1, h, w), 1 = repaint (4-channel UNet blending)
    masked_image_latents: torch.Tensor | None = None  # for 9-channel inpaint UNets
    conditions: Sequence[Any] = ()  # nodegraph_diffusion.conditions.Condition
    eta: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    # the model family's extra UNet inputs for every step (SDXL: text_embeds, time_ids), see families/
    added_cond: dict[str, Any] | None = None
    # the model family (families/base.py ModelFamily): sets the timesteps and calls the denoiser;
    # None = the SD families' way (a plain `set_timesteps`, the UNet call of diffusers' SD pipelines)
    family: Any = None


@dataclass(frozen=True)
class LoopResult:
    latents: torch.Tensor
    extras: dict[str, Any]


def _expand_mask(mask: torch.Tensor, batch: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    mask = mask.to(device=device, dtype=dtype)
    if mask.shape[0] < batch:
        if batch % mask.shape[0]:
            raise SamplingError(f"a batch of {mask.shape[0]} masks does not divide {batch} latents")
        mask = mask.repeat(batch // mask.shape[0], 1, 1, 1)
    return mask


@torch.no_grad()
def run_loop(
    req: LoopInput,
    ctx: Any = None,
    on_step: Callable[[int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    on_latents: Callable[[int, torch.Tensor], None] | None = None,
) -> LoopResult:
    """Run the denoising loop; `on_step(i)` after each UNet call, `check_cancelled()` before each.

    `on_latents(i, latents)` (instead of `on_step`, for previews) sees the latents after each step.

    `ctx` (a NodeContext, may be None in library use) is passed to `Condition.activate`.
    Conditions are activated before the loop and closed in `finally`, also on errors.
    """
    from nodegraph_diffusion.families.base import ModelFamily

    unet, scheduler = req.unet, req.scheduler
    family = req.family if req.family is not None else ModelFamily()
    device = req.latents.device
    dtype = req.latents.dtype
    batch = req.latents.shape[0]
    shape = tuple(req.latents.shape)
    schedule = plan_schedule(scheduler, req.steps, device, req.denoise, req.start_step, req.end_step,
                             lambda s, n, d: family.set_timesteps(s, n, d, shape), family.skipped_steps)
    guidance = pick_guidance(req.conditions, req.cfg, req.negative is not None and req.cfg > 1.0)
    branches = guidance.branches
    positive = batch_embeds(req.positive, batch)
    negative = None
    if branches > 1:
        assert req.negative is not None
        if req.negative.shape[1] != positive.shape[1]:
            raise SamplingError(
                f"positive has {positive.shape[1]} tokens and negative {req.negative.shape[1]}: pad the "
                "shorter first (cond_padding.match_lengths, which the sampler node applies)"
            )
        negative = batch_embeds(req.negative, batch)
    prompt_embeds = guidance.embeds(positive, negative)

    # the inpaint pipeline copies its image latents (`repeat`), so they are contiguous even when the
    # VAE left them channels-last; the img2img pipeline keeps the layout (`cat`): the same here
    source = req.latents if req.mask is None else req.latents.contiguous()
    latents = noised_latents(scheduler, source, req.noise, schedule, req.add_noise)
    step_kwargs = extra_step_kwargs(scheduler, req.generator, req.eta)
    in_channels = int(unet.config.in_channels)
    mask = None if req.mask is None else _expand_mask(req.mask, batch, dtype, device)
    inpaint9 = in_channels == 9
    if inpaint9:
        if mask is None or req.masked_image_latents is None:
            raise SamplingError("a 9-channel inpainting UNet needs a mask and masked-image latents")
        mask_in = torch.cat([mask] * branches) if branches > 1 else mask
        masked = _expand_mask(req.masked_image_latents, batch, dtype, device)
        masked_in = torch.cat([masked] * branches) if branches > 1 else masked
    image_latents = source  # the clean source for 4-channel mask blending

    setup = SamplingSetup(
        unet=unet,
        device=device,
        dtype=dtype,
        batch_size=batch,
        do_cfg=branches > 1,
        height=int(latents.shape[-2]) * VAE_SCALE,
        width=int(latents.shape[-1]) * VAE_SCALE,
        timesteps=schedule.timesteps,
        num_steps=schedule.total,
        first_step=schedule.first_index,
        prompt_embeds=prompt_embeds,
        generator=req.generator,
        added_cond_kwargs=req.added_cond,
        family=family,
        guidance=guidance,
    )
    units: list[Any] = []
    try:
        for condition in req.conditions:
            units.append(condition.activate(setup, ctx))
        latents = initial_latents(units, latents)
        timesteps = schedule.timesteps
        last = len(timesteps) - 1
        want_x0 = not schedule.reaches_end and not req.return_with_leftover_noise
        for i, t in enumerate(timesteps):
            if check_cancelled is not None:
                check_cancelled()
            latent_model_input = guidance.expand(latents)
            if hasattr(scheduler, "scale_model_input"):  # flow-matching schedulers have none (no scaling)
                latent_model_input = scheduler.scale_model_input(latent_model_input, t)
            if inpaint9:
                latent_model_input = torch.cat([latent_model_input, mask_in, masked_in], dim=1)
            step = StepInput(schedule.first_index + i, t, latent_model_input, prompt_embeds)
            family_kwargs = {"added_cond_kwargs": req.added_cond} if req.added_cond else {}
            extra = merge_step_kwargs([family_kwargs, *(unit.step_kwargs(step) for unit in units)])
            noise_pred = family.denoise(unet, latent_model_input, t, prompt_embeds, extra)
            noise_pred = after_guidance(units, step, guidance.combine(noise_pred), noise_pred, latents)
            if want_x0 and i == last:
                out = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=True)
                x0 = getattr(out, "pred_original_sample", None)
                if x0 is None:
                    raise SamplingError(
                        f"{type(scheduler).__name__} gives no denoised estimate; use "
                        "return_with_leftover_noise=true or another scheduler"
                    )
                latents = x0
            else:
                latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
            if mask is not None and not inpaint9:
                init_latents_proper = image_latents
                if i < last or not schedule.reaches_end:
                    index = schedule.first_index + i + 1
                    if index < schedule.total:
                        noise_timestep = scheduler.timesteps[index]
                        init_latents_proper = renoised(scheduler, init_latents_proper, req.noise,
                                                       torch.tensor([noise_timestep]))
                latents = (1 - mask) * init_latents_proper + mask * latents
            latents = after_step(units, step, latents)
            if on_latents is not None:
                on_latents(i, latents)
            elif on_step is not None:
                on_step(i)
        extras = {**req.extras, **collect_results(units)}
    finally:
        for unit in units:
            unit.close()
    return LoopResult(latents, extras)
