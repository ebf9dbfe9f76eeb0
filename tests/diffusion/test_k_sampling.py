"""The sigma-space sampler (diffusion.k_sampler + diffusion.sample) against k-diffusion's own samplers.

Reference side, written here from ComfyUI's sources: the noise of `comfy/sample.py` prepare_noise
(`torch.manual_seed(seed)` then `torch.randn`), sigma tables from k-diffusion's functions
(`get_sigmas_karras`, `DiscreteSchedule.get_sigmas` for "normal"), the initial latents of
`EPS.noise_scaling`, the denoiser of `BaseModel.apply_model` (x / sqrt(sigma^2 + 1) in, nearest
training timestep, x - eps * sigma out) with CFG on the denoised batch [uncond, cond], the noise
samplers of ComfyUI's `default_noise_sampler` (seed + 1 on the CPU) and k-diffusion's Brownian tree;
then k-diffusion's `sample_*` function runs it. Max abs difference 0.0 expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from k_reference import (
    CFG,
    SHAPE,
    comfy_denoiser,
    comfy_noise,
    load_external,
    load_unet,
    noise_sampler,
    random_parts,
    ref_sigmas,
)
from nodegraph_diffusion.k_diffusion_import import k_sampling
from nodegraph_diffusion.k_sampler_nodes import K_SAMPLERS, K_SCHEDULES, k_sampler
from nodegraph_diffusion.latent_nodes import empty_latents
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.sigmas import SCHEDULER_NAMES
from nodegraph_diffusion.types import Latents


@pytest.fixture(scope="module")
def kd() -> Any:
    return k_sampling()


@pytest.fixture(scope="module")
def external() -> Any:
    return load_external()


@pytest.fixture(scope="module")
def unet(tiny_dir: Path) -> Any:
    return load_unet(tiny_dir)


@pytest.fixture
def parts(ctx: Any) -> tuple[Any, Any, Any]:
    return random_parts(ctx)


def reference(
    kd: Any,
    external: Any,
    unet: Any,
    pos: torch.Tensor,
    neg: torch.Tensor,
    sampler: str,
    scheduler: str,
    steps: int,
    seed: int,
    denoise: float = 1.0,
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    total = steps if denoise >= 1 else int(steps / denoise)
    sigmas = ref_sigmas(kd, external, scheduler, total, sampler)[-(steps + 1) :]
    noise = comfy_noise(seed)
    if denoise >= 1:
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    else:
        x = noise * sigmas[0] + source
    fn = getattr(kd, f"sample_{sampler}")
    with torch.no_grad():
        return fn(
            comfy_denoiser(unet, pos, neg, CFG),
            x,
            sigmas,
            disable=True,
            **noise_sampler(kd, sampler, x, sigmas, seed),
        )


def ours(
    ctx: Any, parts: Any, sampler: str, scheduler: str, steps: int, seed: int, **kw: Any
) -> torch.Tensor:
    model, pos, neg = parts
    spec = k_sampler(model_scheduler=model.scheduler, sampler=sampler, scheduler=scheduler)
    kw.setdefault("latents", empty_latents(width=64, height=64))
    return sample(
        ctx,
        unet=model.unet,
        scheduler=spec,
        positive=pos,
        negative=neg,
        steps=steps,
        cfg=CFG,
        seed=seed,
        **kw,
    ).samples


@pytest.mark.parametrize(
    "sampler, scheduler, steps",
    [
        ("euler", "normal", 3),
        ("euler_ancestral", "karras", 3),
        ("heun", "karras", 2),
        ("dpm_2", "normal", 2),
        ("dpmpp_2m", "karras", 3),
        ("lms", "normal", 3),
        ("dpmpp_sde", "karras", 2),
        ("dpmpp_2m_sde", "normal", 3),
    ],
)
def test_sampled_latents_equal_k_diffusion(ctx, parts, kd, external, unet, sampler, scheduler, steps) -> None:
    pos, neg = parts[1].embeds, parts[2].embeds
    got = ours(ctx, parts, sampler, scheduler, steps, seed=11)
    want = reference(kd, external, unet, pos, neg, sampler, scheduler, steps, seed=11)
    assert float((got - want).abs().max()) == 0.0
    other = ours(ctx, parts, sampler, scheduler, steps, seed=12)
    assert float((got - other).abs().max()) > 1e-3  # the seed matters (noise, and ancestral draws)


def test_denoise_below_one_runs_the_tail_of_a_longer_table(ctx, parts, kd, external, unet) -> None:
    source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    got = ours(ctx, parts, "euler_ancestral", "normal", 3, seed=5, denoise=0.6, latents=Latents(source))
    want = reference(
        kd,
        external,
        unet,
        parts[1].embeds,
        parts[2].embeds,
        "euler_ancestral",
        "normal",
        3,
        seed=5,
        denoise=0.6,
        source=source,
    )
    assert float((got - want).abs().max()) == 0.0
    assert float((got - source).abs().max()) > 1e-3


def test_k_diffusions_own_denoiser_agrees_to_rounding(ctx, parts, kd, external, unet) -> None:
    """k-diffusion's `DiscreteEpsDDPMDenoiser` (quantized timesteps) instead of ComfyUI's wrapping.

    Not bit-equal: it scales the input as `x * (1 / sqrt(sigma^2 + 1))` where ComfyUI divides, so the
    UNet sees inputs 1 ulp apart and the difference grows through the steps. Bound: 1e-3 absolute on
    latents of magnitude ~1 (measured: 1.8e-5 for euler, 4e-4 for heun).
    """
    import numpy as np

    pos, neg = parts[1].embeds, parts[2].embeds
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)

    class Eps(external.DiscreteEpsDDPMDenoiser):  # type: ignore[misc, name-defined]
        def get_eps(self, x: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
            return unet(x, t, encoder_hidden_states=torch.cat([neg, pos]), return_dict=False)[0]

    wrapped = Eps(unet, alphas, quantize=True)

    def cfg_model(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        uncond, cond = wrapped(torch.cat([x, x]), torch.cat([sigma, sigma])).chunk(2)
        return uncond + (cond - uncond) * CFG

    sigmas = ref_sigmas(kd, external, "normal", 3, "euler")
    x = comfy_noise(11) * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    with torch.no_grad():
        want = kd.sample_euler(cfg_model, x, sigmas, disable=True)
    got = ours(ctx, parts, "euler", "normal", 3, seed=11)
    assert float((got - want).abs().max()) < 1e-3


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_advanced_split_with_leftover_noise_equals_one_run(ctx, parts, sampler) -> None:
    whole = ours(ctx, parts, sampler, "karras", 6, seed=9)
    first = ours(ctx, parts, sampler, "karras", 6, seed=9, end_step=3, return_with_leftover_noise=True)
    second = ours(
        ctx, parts, sampler, "karras", 6, seed=123, latents=Latents(first), start_step=3, add_noise=False
    )
    assert float((first - whole).abs().max()) > 1e-3
    assert float((second - whole).abs().max()) == 0.0


def test_stopping_early_without_leftover_noise_ends_at_sigma_zero(ctx, parts, kd, external, unet) -> None:
    """return_with_leftover_noise off: the cut table's last sigma becomes 0 (force_full_denoise)."""
    got = ours(ctx, parts, "euler", "normal", 4, seed=2, end_step=2, return_with_leftover_noise=False)
    sigmas = ref_sigmas(kd, external, "normal", 4, "euler")[:3].clone()
    sigmas[-1] = 0
    x = comfy_noise(2) * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    with torch.no_grad():
        want = kd.sample_euler(
            comfy_denoiser(unet, parts[1].embeds, parts[2].embeds, CFG), x, sigmas, disable=True
        )
    assert float((got - want).abs().max()) == 0.0


def test_start_past_the_end_returns_the_input(ctx, parts) -> None:
    source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    assert torch.equal(
        ours(ctx, parts, "euler", "normal", 3, seed=1, latents=Latents(source), start_step=3), source
    )


def test_node_names_match_the_sampler_and_schedule_tables() -> None:
    from nodegraph_diffusion.k_sampling import SAMPLERS

    assert set(K_SAMPLERS) == set(SAMPLERS) and set(K_SCHEDULES) == set(SCHEDULER_NAMES)


def test_unknown_names_are_input_errors(parts) -> None:
    from nodegraph.api import InputError

    with pytest.raises(InputError) as err:
        k_sampler(model_scheduler=parts[0].scheduler, sampler="euler_cfg_pp")
    assert err.value.field == "sampler" and "euler_ancestral" in str(err.value)
    with pytest.raises(InputError) as err:
        k_sampler(model_scheduler=parts[0].scheduler, scheduler="linear_quadratic")
    assert err.value.field == "scheduler"


def test_progress_counts_steps_and_cancel_stops(ctx, parts) -> None:
    """heun evaluates twice a step: progress still counts the run's steps; a cancel stops the run."""
    from nodegraph.runtime.context import Cancelled

    calls: list[tuple[str, Any]] = []

    class Sink:
        def start_task(self, node_id: str, description: str, total: int) -> str:
            calls.append(("start", total))
            return "task"

        def advance(self, task: str, amount: int = 1) -> None:
            calls.append(("advance", amount))

        def finish_task(self, task: str) -> None:
            calls.append(("finish", None))

    ctx.run.progress_sink = Sink()
    ours(ctx, parts, "heun", "karras", 3, seed=1)
    assert calls == [("start", 3), ("advance", 1), ("advance", 1), ("advance", 1), ("finish", None)]
    ctx.run.cancel_event.set()
    with pytest.raises(Cancelled):
        ours(ctx, parts, "euler", "karras", 3, seed=1)


def test_missing_k_diffusion_is_an_input_error_with_the_install_hint(ctx, parts, monkeypatch) -> None:
    import importlib.util
    import sys

    from nodegraph_diffusion.k_diffusion_import import PRIVATE

    from nodegraph.api import InputError

    find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, f"{PRIVATE}.sampling")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "k_diffusion" else find_spec(name, *a)
    )
    with pytest.raises(InputError) as err:
        ours(ctx, parts, "euler", "normal", 2, seed=1)
    assert err.value.field == "scheduler" and "pip install --no-deps k-diffusion" in str(err.value)


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_noise_mask_blends_the_source_back_each_call(ctx, parts, kd, external, unet, sampler) -> None:
    """SetLatentNoiseMask in ComfyUI's KSamplerX0Inpaint: x = x·m + (source + noise·sigma)·(1 - m) going
    in, out·m + source·(1 - m) coming out; its "ddim" (euler) uses fresh noise from seed + 1 there."""
    source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1.0
    got = ours(ctx, parts, sampler, "normal", 3, seed=4, latents=Latents(source, noise_mask=mask))
    sigmas = ref_sigmas(kd, external, "normal", 3, "euler")
    noise = comfy_noise(4)
    kept_noise = comfy_noise(5) if sampler == "ddim" else noise
    inner = comfy_denoiser(unet, parts[1].embeds, parts[2].embeds, CFG)

    def model(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1)
        x = x * mask + (kept_noise * s + source) * (1.0 - mask)
        return inner(x, sigma) * mask + source * (1.0 - mask)

    x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0) + source
    with torch.no_grad():
        want = kd.sample_euler(model, x, sigmas, disable=True)
    assert float((got - want).abs().max()) == 0.0
    assert torch.equal(got[..., :2, :], source[..., :2, :])  # outside the mask: the source, exactly
