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

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph_diffusion.k_diffusion_import import PRIVATE, k_sampling
from nodegraph_diffusion.k_sampler_nodes import K_SAMPLERS, K_SCHEDULES, k_sampler
from nodegraph_diffusion.latent_nodes import empty_latents
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.sigmas import SCHEDULER_NAMES, model_sigmas
from nodegraph_diffusion.types import Conditioning, Latents

SHAPE = (1, 4, 8, 8)
CFG = 6.5


@pytest.fixture(scope="module")
def kd() -> Any:
    return k_sampling()


@pytest.fixture(scope="module")
def external(kd: Any) -> Any:
    """k-diffusion's external.py (its denoiser wrappers), beside the sampling module it imports."""
    root = Path(sys.modules[PRIVATE].__path__[0])
    spec = importlib.util.spec_from_file_location(f"{PRIVATE}.external", root / "external.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def unet(tiny_dir: Path) -> Any:
    from diffusers import UNet2DConditionModel

    from nodegraph_diffusion.loading import own_storage

    model = UNet2DConditionModel.from_pretrained(tiny_dir / "unet", local_files_only=True).eval()
    own_storage(model)
    return model


@pytest.fixture
def parts(ctx: Any) -> tuple[Any, Conditioning, Conditioning]:
    model = load_model(ctx, path="builtin:tinyworld")
    g = torch.Generator().manual_seed(0)
    return model, Conditioning(torch.randn((1, 77, 32), generator=g)), Conditioning(torch.randn((1, 77, 32), generator=g))


MODEL = model_sigmas()


def comfy_noise(seed: int, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        return torch.randn(shape, generator=torch.manual_seed(seed), device="cpu")


def ref_sigmas(kd: Any, external: Any, scheduler: str, steps: int, sampler: str) -> torch.Tensor:
    """k-diffusion's tables; dpm_2 samplers: one step more, the penultimate sigma dropped (KSampler)."""
    drop = sampler in ("dpm_2", "dpm_2_ancestral")
    n = steps + 1 if drop else steps
    if scheduler == "karras":
        sigmas = kd.get_sigmas_karras(n, MODEL.sigma_min, MODEL.sigma_max)
    else:
        sigmas = external.DiscreteSchedule(MODEL.sigmas, quantize=False).get_sigmas(n)
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if drop else sigmas


def comfy_denoiser(unet: Any, pos: torch.Tensor, neg: torch.Tensor, cfg: float) -> Any:
    def model(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        xx, ss = torch.cat([x, x]), torch.cat([sigma, sigma])
        s = ss.view(-1, 1, 1, 1)
        t = MODEL.timestep(ss).float()
        eps = unet(xx / (s**2 + 1.0) ** 0.5, t, encoder_hidden_states=torch.cat([neg, pos]), return_dict=False)[0]
        uncond, cond = (xx - eps.float() * s).chunk(2)
        return uncond + (cond - uncond) * cfg

    return model


def noise_sampler(kd: Any, sampler: str, x: torch.Tensor, sigmas: torch.Tensor, seed: int) -> dict[str, Any]:
    if sampler.endswith("ancestral"):
        gen = torch.Generator("cpu").manual_seed(seed + 1)
        return {"noise_sampler": lambda s, sn: torch.randn(x.size(), generator=gen)}
    if "sde" in sampler:
        tree = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)
        return {"noise_sampler": tree}
    return {}


def reference(kd: Any, external: Any, unet: Any, pos: torch.Tensor, neg: torch.Tensor, sampler: str,
              scheduler: str, steps: int, seed: int, denoise: float = 1.0,
              source: torch.Tensor | None = None) -> torch.Tensor:
    total = steps if denoise >= 1 else int(steps / denoise)
    sigmas = ref_sigmas(kd, external, scheduler, total, sampler)[-(steps + 1):]
    noise = comfy_noise(seed)
    if denoise >= 1:
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    else:
        x = noise * sigmas[0] + source
    fn = getattr(kd, f"sample_{sampler}")
    with torch.no_grad():
        return fn(comfy_denoiser(unet, pos, neg, CFG), x, sigmas, disable=True,
                  **noise_sampler(kd, sampler, x, sigmas, seed))


def ours(ctx: Any, parts: Any, sampler: str, scheduler: str, steps: int, seed: int, **kw: Any) -> torch.Tensor:
    model, pos, neg = parts
    spec = k_sampler(model_scheduler=model.scheduler, sampler=sampler, scheduler=scheduler)
    kw.setdefault("latents", empty_latents(width=64, height=64))
    return sample(ctx, unet=model.unet, scheduler=spec, positive=pos, negative=neg, steps=steps, cfg=CFG,
                  seed=seed, **kw).samples


@pytest.mark.parametrize(
    "sampler, scheduler, steps",
    [("euler", "normal", 3), ("euler_ancestral", "karras", 3), ("heun", "karras", 2), ("dpm_2", "normal", 2),
     ("dpmpp_2m", "karras", 3), ("lms", "normal", 3), ("dpmpp_sde", "karras", 2),
     ("dpmpp_2m_sde", "normal", 3)],
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
    want = reference(kd, external, unet, parts[1].embeds, parts[2].embeds, "euler_ancestral", "normal", 3,
                     seed=5, denoise=0.6, source=source)
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
    second = ours(ctx, parts, sampler, "karras", 6, seed=123, latents=Latents(first), start_step=3,
                  add_noise=False)
    assert float((first - whole).abs().max()) > 1e-3
    assert float((second - whole).abs().max()) == 0.0


def test_stopping_early_without_leftover_noise_ends_at_sigma_zero(ctx, parts, kd, external, unet) -> None:
    """return_with_leftover_noise off: the cut table's last sigma becomes 0 (KSampler's force_full_denoise)."""
    got = ours(ctx, parts, "euler", "normal", 4, seed=2, end_step=2, return_with_leftover_noise=False)
    sigmas = ref_sigmas(kd, external, "normal", 4, "euler")[:3].clone()
    sigmas[-1] = 0
    x = comfy_noise(2) * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    with torch.no_grad():
        want = kd.sample_euler(comfy_denoiser(unet, parts[1].embeds, parts[2].embeds, CFG), x, sigmas,
                               disable=True)
    assert float((got - want).abs().max()) == 0.0


def test_start_past_the_end_returns_the_input(ctx, parts) -> None:
    source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    assert torch.equal(ours(ctx, parts, "euler", "normal", 3, seed=1, latents=Latents(source), start_step=3),
                       source)


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


def feather(height: int, width: int, box: tuple[int, int, int, int], full: tuple[int, int],
            strength: float) -> torch.Tensor:
    """ComfyUI's `get_area_and_mult` weight of an area (no mask): strength, fading over
    min(8, size // 4) cells on the sides that do not touch the image edge."""
    mult = torch.ones(1, 4, height, width) * strength
    h, w, y, x = box
    for dim, (size, offset, limit) in enumerate(((h, y, full[0]), (w, x, full[1]))):
        rr = min(8, size // 4)
        for t in range(rr):
            f = (1.0 / rr) * (t + 1)
            if offset != 0:
                mult.narrow(dim + 2, t, 1).mul_(f)
            if size + offset < limit:
                mult.narrow(dim + 2, size - 1 - t, 1).mul_(f)
    return mult


def test_regional_conditioning_follows_comfyuis_calc_cond_batch(ctx, parts, kd, external, unet) -> None:
    """positive = combine(set_area(A, 96x80 px at (16, 32), strength 0.8), B), negative = N on a 128 px
    image (16x16 latent cells). ComfyUI adds N's twin with A's area and strength (create_cond_with_same_
    area_if_none), runs [N twin, A] on the crop and [N, B] on the whole latent, sums weighted outputs,
    divides by the summed weights, then CFG."""
    from nodegraph_diffusion.k_sampler_nodes import combine, set_area

    model, a, n = parts
    b = Conditioning(torch.randn((1, 77, 32), generator=torch.Generator().manual_seed(7)))
    positive = combine(first=set_area(conditioning=a, width=96, height=80, x=16, y=32, strength=0.8), second=b)
    box, full = (10, 12, 4, 2), (16, 16)
    spec = k_sampler(model_scheduler=model.scheduler, sampler="euler", scheduler="karras")
    got = sample(ctx, unet=model.unet, scheduler=spec, positive=positive, negative=n, steps=2, cfg=CFG, seed=3,
                 latents=empty_latents(width=128, height=128)).samples

    def denoise(x: torch.Tensor, sigma: torch.Tensor, embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        xx, ss = torch.cat([x] * len(embeds)), torch.cat([sigma] * len(embeds))
        s = ss.view(-1, 1, 1, 1)
        eps = unet(xx / (s**2 + 1.0) ** 0.5, MODEL.timestep(ss).float(), encoder_hidden_states=torch.cat(embeds),
                   return_dict=False)[0]
        return list((xx - eps.float() * s).chunk(len(embeds)))

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        h, w, y, xo = box
        crop = x[:, :, y:y + h, xo:xo + w]
        n_twin, a_out = denoise(crop, sigma, [n.embeds, a.embeds])
        n_full, b_out = denoise(x, sigma, [n.embeds, b.embeds])
        mult = feather(h, w, box, full, 0.8)
        outs, counts = [torch.zeros_like(x), torch.zeros_like(x)], [torch.ones_like(x) * 1e-37 for _ in range(2)]
        for side, out, m in ((1, n_twin, mult), (0, a_out, mult)):
            outs[side][:, :, y:y + h, xo:xo + w] += out * m
            counts[side][:, :, y:y + h, xo:xo + w] += m
        ones = torch.ones_like(x)
        for side, out in ((1, n_full), (0, b_out)):
            outs[side] += out * ones
            counts[side] += ones
        cond, uncond = outs[0] / counts[0], outs[1] / counts[1]
        return uncond + (cond - uncond) * CFG

    sigmas = kd.get_sigmas_karras(2, MODEL.sigma_min, MODEL.sigma_max)
    x = comfy_noise(3, (1, 4, 16, 16)) * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    with torch.no_grad():
        want = kd.sample_euler(model_fn, x, sigmas, disable=True)
    assert float((got - want).abs().max()) == 0.0
    # one step from the same noise: outside the area only B and N act, so the result is the plain one there
    one = {"unet": model.unet, "scheduler": spec, "negative": n, "steps": 1, "cfg": CFG, "seed": 3,
           "latents": empty_latents(width=128, height=128)}
    diff = sample(ctx, positive=positive, **one).samples - sample(ctx, positive=b, **one).samples
    assert float(diff[:, :, 5:13, 3:13].abs().max()) > 1e-3
    assert float(diff[:, :, :, 14:].abs().max()) == 0.0 and float(diff[:, :, :4].abs().max()) == 0.0


def test_zero_out_and_strength_nodes(parts) -> None:
    from nodegraph_diffusion.k_sampler_nodes import set_area, set_area_strength, zero_out

    zeroed = zero_out(conditioning=parts[1])
    assert not zeroed.embeds.any() and zeroed.embeds.shape == parts[1].embeds.shape
    weighted = set_area_strength(conditioning=set_area(conditioning=parts[1], width=0.5, height=1.0, x=0.5,
                                                      percentage=True), strength=2.5)
    (entry,) = weighted.entries
    assert entry.strength == 2.5 and entry.area is not None and entry.area.percentage and entry.area.x == 0.5


def test_regional_conditioning_is_refused_by_the_diffusers_loop(ctx, parts) -> None:
    from nodegraph.api import InputError
    from nodegraph_diffusion.k_sampler_nodes import set_area

    model, pos, neg = parts
    with pytest.raises(InputError) as err:
        sample(ctx, unet=model.unet, scheduler=model.scheduler, negative=neg, steps=2,
               positive=set_area(conditioning=pos, width=32, height=32), latents=empty_latents(width=64, height=64))
    assert err.value.field == "positive" and "diffusion.k_sampler" in str(err.value)


def test_sdxl_family_inputs_reach_the_unet(ctx, kd) -> None:
    """On the tiny SDXL the UNet gets the family's added_cond_kwargs (pooled text_embeds, time_ids) in
    every call, batched [uncond, cond] like the embeddings."""
    from diffusers import UNet2DConditionModel

    from nodegraph_diffusion.families import DenoiseRequest, family_named
    from nodegraph_diffusion.loading import own_storage
    from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
    from nodegraph_diffusion.text_nodes import encode_text

    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    pos = encode_text(ctx, model.text_encoder, "a big red circle in the center, blue background")
    neg = encode_text(ctx, model.text_encoder, "")
    spec = k_sampler(model_scheduler=model.scheduler, sampler="dpmpp_2m", scheduler="karras")
    got = sample(ctx, unet=model.unet, scheduler=spec, positive=pos, negative=neg, steps=3, cfg=CFG, seed=8,
                 latents=Latents(torch.zeros(SHAPE))).samples

    unet = UNet2DConditionModel.from_pretrained(BUILTIN_DIR / "tinyxl" / "unet", local_files_only=True).eval()
    own_storage(unet)
    added = family_named("sdxl").added_cond_kwargs(unet, pos, neg, DenoiseRequest(1, True, 64, 64, "cpu",
                                                                                   torch.float32))
    assert added is not None
    embeds = torch.cat([neg.embeds, pos.embeds])

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        xx, ss = torch.cat([x, x]), torch.cat([sigma, sigma])
        s = ss.view(-1, 1, 1, 1)
        eps = unet(xx / (s**2 + 1.0) ** 0.5, MODEL.timestep(ss).float(), encoder_hidden_states=embeds,
                   added_cond_kwargs=added, return_dict=False)[0]
        uncond, cond = (xx - eps.float() * s).chunk(2)
        return uncond + (cond - uncond) * CFG

    sigmas = kd.get_sigmas_karras(3, MODEL.sigma_min, MODEL.sigma_max)
    with torch.no_grad():
        want = kd.sample_dpmpp_2m(model_fn, comfy_noise(8) * torch.sqrt(1.0 + sigmas[0] ** 2.0), sigmas,
                                  disable=True)
    assert float((got - want).abs().max()) == 0.0
