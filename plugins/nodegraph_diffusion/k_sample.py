"""`diffusion.sample` with a `KSamplerSpec`: graph values (handles, conditionings, latents) -> k_sampling.

Called from the sampler node's body (torch is imported by then). Follows ComfyUI's `common_ksampler`
and `KSampler.sample`: noise from the seed on the CPU (zeros when add_noise is off), the sigma table
of scheduler × steps × denoise (with the sampler's penultimate-sigma rule), cut at start/end step,
the last sigma set to 0 when the run stops early without leftover noise.
"""

from __future__ import annotations

from typing import Any

import torch

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.cond_padding import PaddingError, match_lengths
from nodegraph_diffusion.families import DenoiseRequest, ModelFamily
from nodegraph_diffusion.k_diffusion_import import KDiffusionMissing
from nodegraph_diffusion.k_sampling import SAMPLERS, KLoopInput, comfy_noise, run_k_loop
from nodegraph_diffusion.loading import use_unet
from nodegraph_diffusion.regions import Entry, resolve_area
from nodegraph_diffusion.sampling import SamplingError, batch_embeds
from nodegraph_diffusion.sigmas import SCHEDULER_NAMES, config_sigmas, ksampler_sigmas, split_sigmas
from nodegraph_diffusion.types import KSamplerSpec, Latents, RegionEntry


def check_spec(spec: KSamplerSpec) -> None:
    """InputError (field `sampler`/`scheduler`) for names the sigma-space sampler does not know."""
    if spec.sampler not in SAMPLERS:
        raise InputError(
            f"unknown k-sampler '{spec.sampler}' (known: {', '.join(SAMPLERS)})", field="sampler"
        )
    if spec.scheduler not in SCHEDULER_NAMES:
        raise InputError(
            f"unknown sigma schedule '{spec.scheduler}' (known: {', '.join(SCHEDULER_NAMES)})",
            field="scheduler",
        )


def run_sigmas(
    spec: KSamplerSpec, steps: int, denoise: float, start_step: int, end_step: int | None, leftover: bool
) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """(model sigmas, the full table, the run's cut of it or None when nothing is left to run)."""
    try:
        model = config_sigmas(dict(spec.base_config))
    except ValueError as exc:
        raise InputError(str(exc), field="scheduler") from exc
    full = ksampler_sigmas(model, spec.scheduler, steps, denoise, spec.sampler)
    return model, full, split_sigmas(full, start_step, end_step, force_full_denoise=not leftover)


def _entries(
    family: ModelFamily,
    model: Any,
    entries: tuple[RegionEntry, ...],
    batch: int,
    shape: tuple[int, ...],
    scale: int,
    device: Any,
    dtype: Any,
    padded: torch.Tensor | None = None,
) -> list[Entry]:
    out = []
    h, w = int(shape[-2]), int(shape[-1])
    request = DenoiseRequest(batch, False, h * scale, w * scale, device, dtype)
    for item in entries:
        embeds = item.cond.embeds if padded is None else padded
        try:
            added = family.added_cond_kwargs(model, item.cond, None, request)
        except ValueError as exc:
            raise InputError(str(exc), field="positive") from exc
        area = resolve_area(item.area, h, w)
        if area is not None and (area[0] < 1 or area[1] < 1 or area[2] >= h or area[3] >= w):
            raise InputError(
                f"an area of {area[1]}x{area[0]} latent cells at ({area[3]}, {area[2]}) lies outside "
                f"the {w}x{h}-cell latents (areas are in pixels // 8)",
                field="positive",
            )
        out.append(
            Entry(
                batch_embeds(embeds.to(device=device, dtype=dtype), batch), area, float(item.strength), added
            )
        )
    return out


def sample_k(
    ctx: NodeContext,
    spec: KSamplerSpec,
    unet: Any,
    family: ModelFamily,
    positive: tuple[RegionEntry, ...],
    negative: tuple[RegionEntry, ...] | None,
    latents: Latents,
    noise: torch.Tensor | None,
    seed: int,
    steps: int,
    cfg: float,
    denoise: float,
    start_step: int,
    end_step: int | None,
    add_noise: bool,
    leftover: bool,
    conditions: list[Any],
) -> Latents:
    """Sample `latents` with the sigma-space loop; returns the node's output."""
    check_spec(spec)
    model_sigmas, full, sigmas = run_sigmas(spec, steps, denoise, start_step, end_step, leftover)
    if sigmas is None or len(sigmas) == 0:  # ComfyUI returns the input latents unchanged
        return latents
    shape = tuple(latents.samples.shape)
    initial = comfy_noise(shape, seed) if noise is None else noise
    if not add_noise:
        initial = torch.zeros(shape)
    plain = (
        len(positive) == 1
        and positive[0].area is None
        and (negative is None or (len(negative) == 1 and negative[0].area is None))
    )
    pos_pad = neg_pad = None
    if plain and negative is not None:  # one prompt a side: pad the shorter, as the diffusers path does
        try:
            pos_pad, neg_pad = match_lengths(
                positive[0].cond.embeds,
                negative[0].cond.embeds,
                positive[0].cond.empty,
                negative[0].cond.empty,
            )
        except PaddingError as exc:
            raise InputError(str(exc), field="negative") from exc
    with use_unet(ctx, unet) as model:
        param = next(model.parameters())
        # the dtype it computes in: diffusers' answer (fp8-stored or GGUF weights compute in another)
        device, dtype = param.device, getattr(model, "dtype", param.dtype)
        batch, scale = shape[0], family.vae_scale
        pos = _entries(family, model, positive, batch, shape, scale, device, dtype, pos_pad)
        neg = (
            None
            if negative is None
            else _entries(family, model, negative, batch, shape, scale, device, dtype, neg_pad)
        )
        mask = latents.noise_mask
        request = KLoopInput(
            unet=model,
            model=model_sigmas,
            sampler=spec.sampler,
            sigmas=sigmas.to(device),
            positive=pos,
            negative=neg,
            latents=latents.samples.to(device=device, dtype=dtype),
            noise=initial.to(device=device, dtype=dtype),
            seed=seed,
            cfg=cfg,
            prediction_type=str(dict(spec.base_config).get("prediction_type", "epsilon")),
            mask=None if mask is None else mask.to(device=device, dtype=dtype),
            conditions=conditions,
            first_step=int(start_step) if start_step < len(full) - 1 else 0,
            total_steps=len(full) - 1,
            extras=dict(latents.extras),
        )
        run = len(sigmas) - 1
        try:
            with ctx.progress(run, f"sampling {run} steps ({spec.sampler}, {spec.scheduler})") as advance:
                done = [0]

                def step(_i: int) -> None:  # dpm_adaptive reports its own, unforeseeable step count
                    if done[0] < run:
                        done[0] += 1
                        advance(1)

                out, extras = run_k_loop(request, ctx, on_step=step, check_cancelled=ctx.check_cancelled)
        except KDiffusionMissing as exc:
            raise InputError(str(exc), field="scheduler") from exc
        except SamplingError as exc:
            raise InputError(str(exc), field="steps") from exc
    return Latents(out.to(device="cpu", dtype=torch.float32), latents.noise_mask, extras)
