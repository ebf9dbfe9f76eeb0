"""The sampler node: adapts graph values (handles, Conditioning, Latents) to `sampling.run_loop`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.cond_padding import PaddingError, match_lengths
from nodegraph_diffusion.conditions import Condition, NoiseDraws, draw_before_noise
from nodegraph_diffusion.families import DenoiseRequest, ModelFamily, family_named
from nodegraph_diffusion.loading import use_unet
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.types import (
    Conditioning,
    KSamplerSpec,
    Latents,
    Noise,
    RegionalConditioning,
    SchedulerSpec,
    UNetHandle,
    region_entries,
)

if TYPE_CHECKING:  # a catalogue module: torch and sampling are imported in the node body (first call)
    import torch


def guidance_embeds(positive: Conditioning, negative: Conditioning | None,
                    cfg: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The embeddings the loop gets: with CFG on, the shorter side padded to the longer (cond_padding)."""
    if negative is None or cfg <= 1.0:  # no guidance: the negative is not used, nothing to pad
        return positive.embeds, None if negative is None else negative.embeds
    try:
        return match_lengths(positive.embeds, negative.embeds, positive.empty, negative.empty)
    except PaddingError as exc:
        raise InputError(str(exc), field="negative") from exc


def unet_family(unet: UNetHandle, positive: Conditioning | RegionalConditioning,
                negative: Conditioning | RegionalConditioning | None) -> ModelFamily:
    """The UNet's model family, after checking the conditioning came from an encoder of that family."""
    try:
        family = family_named(unet.source.family)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), field="unet") from exc
    for name, value in (("positive", positive), ("negative", negative)):
        for entry in () if value is None else region_entries(value):
            if entry.cond.family != family.name:
                raise InputError(f"{name} conditioning comes from a '{entry.cond.family}' text encoder, but "
                                 f"the UNet is {family.label} ('{family.name}'): encode the prompt with this "
                                 "model's text_encoder", field=name)
    return family


def plain_conditioning(value: Conditioning | RegionalConditioning, name: str) -> Conditioning:
    """The one full-image prompt of a conditioning, for the diffusers loop (which has no regions)."""
    entries = region_entries(value)
    if len(entries) == 1 and entries[0].area is None and entries[0].strength == 1.0:
        return entries[0].cond
    raise InputError(f"{name} is a regional conditioning ({len(entries)} entries, areas or strengths): it "
                     "needs a sigma-space sampler, connect a diffusion.k_sampler as the scheduler",
                     field=name)


def check_latents(latents: Latents, family: ModelFamily) -> None:
    """Refuse latents of another family's latent space (e.g. encoded by a standalone VAE file read
    as SD1.x's for an SDXL UNet: its scaling factor differs), or with another channel count (4-channel
    empty latents for a 16-channel SD3 transformer)."""
    if latents.family and latents.family != family.name:
        raise InputError(f"the latents are in the '{latents.family}' latent space (encoded with a VAE read "
                         f"as {latents.family}'s), but the UNet is {family.label} ('{family.name}'): for a "
                         f"standalone VAE file set `family: {family.name}` on its diffusion.load_vae",
                         field="latents")
    channels = int(latents.samples.shape[1])
    if channels != family.latent_channels:
        raise InputError(f"the latents have {channels} channels, but {family.label} models denoise "
                         f"{family.latent_channels}: give diffusion.empty_latents `unet: @model.unet` (it "
                         "then makes the model's latent channels)", field="latents")


def check_scheduler(scheduler: SchedulerSpec, family: ModelFamily) -> None:
    """Refuse a scheduler the family cannot sample with (DDIM & co. on a flow-matching model)."""
    from nodegraph_diffusion.schedulers import resolve

    cls, _ = resolve(scheduler)
    problem = family.check_scheduler(cls.__name__)
    if problem:
        raise InputError(problem, field="scheduler")


# 1.1: no negative + cfg on an SDXL base = zeros (its pipeline's force_zeros_for_empty_prompt);
# latents of another family's latent space are refused
@node("diffusion.sample", version="1.1.0", facts=family_facts.sample_facts)
def sample(
    ctx: NodeContext,
    unet: Annotated[UNetHandle, Field(description="The denoising UNet (with its LoRAs)")],
    scheduler: Annotated[SchedulerSpec | KSamplerSpec, Field(
        description="A diffusers scheduler (load_model, diffusion.scheduler) or a sigma-space sampler "
                    "with ComfyUI's semantics (diffusion.k_sampler)")],
    positive: Annotated[Conditioning | RegionalConditioning, Field(
        description="What the image should show (regional: diffusion.set_area / combine, k-sampler only)")],
    latents: Annotated[Latents, Field(description="Starting latents: empty (txt2img), encoded image "
                                                  "(img2img; a noise_mask makes it inpainting) or leftover")],
    negative: Annotated[Conditioning | RegionalConditioning | None, Field(
        description="What to steer away from; needed when cfg > 1 (encode an empty prompt for the usual), "
                    "except for SDXL base models, which then guide with zeros as their pipeline does")]
    = None,
    seed: Annotated[int, Field(ge=0, le=2**63 - 1, description="Seed of the noise and the scheduler's draws")]
    = 0,
    steps: Annotated[int, Field(ge=1, le=1000, description="Inference steps of the full schedule")] = 20,
    cfg: Annotated[float, Field(ge=0, le=50, description="Classifier-free guidance scale (<= 1: off)")] = 7.5,
    denoise: Annotated[float, Field(ge=0, le=1, description="Strength: 1 = from pure noise, "
                                                            "0.5 = keep half (img2img, hires fix)")] = 1.0,
    start_step: Annotated[int, Field(ge=0, le=1000, description="First step to run (advanced split)")] = 0,
    end_step: Annotated[int | None, Field(ge=1, le=1000,
                                          description="Step to stop before (None: the last)")] = None,
    add_noise: Annotated[bool, Field(description="Noise the input latents first; false to continue "
                                                 "from a sampler that returned leftover noise")] = True,
    return_with_leftover_noise: Annotated[bool, Field(
        description="When stopping early, return the noisy state (true) or the scheduler's denoised "
                    "estimate (false)")] = True,
    conditions: Annotated[list[Condition] | None, Field(
        description="ControlNet / adapter / attention units, applied in list order")] = None,
    noise: Annotated[Noise | None, Field(description="Initial noise (default: drawn from seed on the CPU)")]
    = None,
    masked_image: Annotated[Latents | None, Field(
        description="Encoded masked image, only for 9-channel inpainting UNets")] = None,
    eta: Annotated[float, Field(ge=0, le=1, description="DDIM eta (schedulers that take it)")] = 0.0,
) -> Latents:
    """Denoise latents with a UNet and scheduler, guided by prompts and any number of conditions."""
    import torch

    from nodegraph_diffusion.preview import latent_preview
    from nodegraph_diffusion.sampling import (
        LoopInput,
        SamplingError,
        draw_noise,
        make_generator,
        plan_schedule,
        run_loop,
    )

    family = unet_family(unet, positive, negative)
    if negative is None and cfg > 1.0:
        # SDXL base: zeros, as its pipeline (sized like the first positive entry)
        negative = family.absent_negative(unet.source, region_entries(positive)[0].cond)
    if negative is None and cfg > 1.0:
        raise InputError(f"cfg {cfg} needs a negative conditioning: connect diffusion.encode_text with "
                         "text '' (or set cfg to 1 to sample without guidance)", field="negative")
    shape = tuple(latents.samples.shape)
    if noise is not None and tuple(noise.samples.shape) != shape:
        raise InputError(f"noise of shape {tuple(noise.samples.shape)} does not fit latents of shape {shape}",
                         field="noise")
    if isinstance(scheduler, KSamplerSpec):  # the sigma-space loop (ComfyUI's KSampler semantics)
        from nodegraph_diffusion.k_sample import sample_k

        if masked_image is not None:
            raise InputError("masked_image (9-channel inpainting UNets) needs a diffusers scheduler",
                             field="masked_image")
        check_latents(latents, family)
        problem = family.check_scheduler("KSampler (k-diffusion)")  # an eps/v denoiser's sigma-space loop
        if problem:
            raise InputError(problem, field="scheduler")
        return sample_k(ctx, scheduler, unet, family, region_entries(positive),
                        None if negative is None else region_entries(negative), latents,
                        None if noise is None else noise.samples, seed, steps, cfg, denoise, start_step,
                        end_step, add_noise, return_with_leftover_noise, list(conditions or ()))
    positive = plain_conditioning(positive, "positive")
    negative = None if negative is None else plain_conditioning(negative, "negative")
    # One CPU generator per run, as the pipelines use it: the initial noise is drawn first (also when
    # `noise` is given, so the scheduler's own draws are the same either way), then ancestral steps.
    # Latents encoded from pixels with this seed record the encoder's draws: replay them around the
    # noise, in the img2img/inpaint pipelines' order, so the noise is not the encoder's own draw.
    generator = make_generator(seed)
    do_cfg = negative is not None and cfg > 1.0
    conditions = draw_before_noise(list(conditions or ()),  # Flux/SD3 ControlNets' encodes, first
                                   NoiseDraws(generator, make_generator(seed), shape, do_cfg))
    prior = latents.drawn if latents.drawn is not None and latents.drawn.seed == seed else None
    for skipped in prior.before_noise if prior else ():
        draw_noise(skipped, generator)
    drawn = draw_noise(shape, generator)
    for skipped in prior.after_noise if prior else ():
        draw_noise(skipped, generator)
    initial = drawn if noise is None else noise.samples
    check_latents(latents, family)
    check_scheduler(scheduler, family)
    pos_embeds, neg_embeds = guidance_embeds(positive, negative, cfg)
    sched = make_scheduler(scheduler)
    with use_unet(ctx, unet) as model:
        param = next(model.parameters())
        # the dtype it computes in: diffusers' answer (fp8-stored or GGUF weights compute in another)
        device, dtype = param.device, getattr(model, "dtype", param.dtype)
        scale = family.vae_scale
        denoise_req = DenoiseRequest(shape[0], do_cfg, shape[-2] * scale, shape[-1] * scale, device, dtype)
        try:
            added = family.added_cond_kwargs(model, positive, negative if do_cfg else None, denoise_req)
        except ValueError as exc:
            raise InputError(str(exc), field="positive") from exc
        request = LoopInput(
            unet=model,
            scheduler=sched,
            positive=pos_embeds.to(device=device, dtype=dtype),
            negative=None if neg_embeds is None else neg_embeds.to(device=device, dtype=dtype),
            latents=latents.samples.to(device=device, dtype=dtype),
            noise=initial.to(device=device, dtype=dtype),
            generator=generator,
            steps=steps,
            cfg=cfg,
            denoise=denoise,
            start_step=start_step,
            end_step=end_step,
            add_noise=add_noise,
            return_with_leftover_noise=return_with_leftover_noise,
            mask=latents.noise_mask,
            masked_image_latents=None if masked_image is None else masked_image.samples,
            conditions=list(conditions or ()),
            eta=eta,
            extras=dict(latents.extras),
            added_cond=added,
            family=family,
        )
        try:  # UNet calls of this run, from a throwaway scheduler (PNDM adds one, Heun doubles)
            calls = len(plan_schedule(make_scheduler(scheduler), steps, device, denoise, start_step, end_step,
                                      lambda s, n, d: family.set_timesteps(s, n, d, shape),
                                      family.skipped_steps).timesteps)
        except SamplingError as exc:
            raise InputError(str(exc), field="steps") from exc
        try:
            with ctx.progress(calls, f"sampling {steps} steps") as advance:
                # a preview per step only for sinks that show one (the server); the CLI's bars do not
                on_latents = ((lambda _i, x: advance(1, preview=latent_preview(x)))
                              if ctx.wants_preview else None)
                result = run_loop(request, ctx, on_step=lambda _i: advance(1),
                                  check_cancelled=ctx.check_cancelled, on_latents=on_latents)
        except SamplingError as exc:
            raise InputError(str(exc), field="steps") from exc
    return Latents(result.latents.to(device="cpu", dtype=torch.float32), latents.noise_mask, result.extras,
                   family=family.name)
