"""The sigma-space sampling loop: k-diffusion's own sampler functions, driven as ComfyUI's KSampler does.

What is ComfyUI's here (read from `comfy/samplers.py`, `comfy/model_sampling.py`, `comfy/sample.py`,
`comfy/k_diffusion/sampling.py`), so that a workflow and its import start from the same noise and take
the same steps:
- the denoiser (`ModelSamplingDiscrete` + EPS/V): input `x / sqrt(sigma^2 + 1)`, UNet timestep = the
  training step nearest to sigma (`timestep`), denoised `x - eps * sigma` (EPS) or the V formula;
- CFG on the *denoised* outputs: `uncond + (cond - uncond) * cfg`, the uncond pass skipped at cfg 1;
- regional entries (regions.py) evaluated on their crops, weighted, summed and divided by the weights;
- initial latents: `noise * sqrt(1 + sigma_0^2)` from the top of the schedule, else
  `latents + noise * sigma_0` (`noise_scaling`); zero noise when add_noise is off;
- the noise samplers of ancestral / SDE samplers seeded from the seed (`default_noise_sampler`: a
  generator on the latents' device, seed + 1 on the CPU; Brownian trees built on the CPU);
- a noise mask blends the source back at every evaluation (`KSamplerX0Inpaint`).
The sampler maths itself is k-diffusion's (`k_diffusion.sampling.sample_*`), never copied here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nodegraph_diffusion.conditions import SamplingSetup, StepInput, collect_results
from nodegraph_diffusion.k_diffusion_import import k_sampling
from nodegraph_diffusion.regions import Entry, batches, crop, pair_areas, weight
from nodegraph_diffusion.sampling import VAE_SCALE, SamplingError, merge_step_kwargs
from nodegraph_diffusion.sigmas import ModelSigmas

# ComfyUI sampler_name -> k-diffusion function; the noise kind each one draws
SAMPLERS: dict[str, str] = {
    "euler": "sample_euler",
    "euler_ancestral": "sample_euler_ancestral",
    "heun": "sample_heun",
    "dpm_2": "sample_dpm_2",
    "dpm_2_ancestral": "sample_dpm_2_ancestral",
    "lms": "sample_lms",
    "dpm_fast": "sample_dpm_fast",
    "dpm_adaptive": "sample_dpm_adaptive",
    "dpmpp_2s_ancestral": "sample_dpmpp_2s_ancestral",
    "dpmpp_sde": "sample_dpmpp_sde",
    "dpmpp_sde_gpu": "sample_dpmpp_sde",
    "dpmpp_2m": "sample_dpmpp_2m",
    "dpmpp_2m_sde": "sample_dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu": "sample_dpmpp_2m_sde",
    "dpmpp_3m_sde": "sample_dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu": "sample_dpmpp_3m_sde",
    "ddim": "sample_euler",  # ComfyUI runs its "ddim" as euler (with fresh noise for inpainting)
}
GAUSSIAN = {"euler_ancestral", "dpm_2_ancestral", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral"}
BROWNIAN = {
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
}


def comfy_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """ComfyUI's `prepare_noise`: `torch.randn(shape)` from a CPU generator seeded with `seed`.

    The same numbers as `torch.manual_seed(seed)` then `randn`, from a private generator (the global
    one is left alone)."""
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(int(seed)), device="cpu")


def gaussian_noise_sampler(x: torch.Tensor, seed: int) -> Callable[[Any, Any], torch.Tensor]:
    """ComfyUI's `default_noise_sampler(x, seed)`: fresh draws from a generator on x's device
    (seed + 1 on the CPU, so they are not the initial noise)."""
    device = x.device
    generator = torch.Generator(device=device).manual_seed(int(seed) + (1 if device.type == "cpu" else 0))
    return lambda sigma, sigma_next: torch.randn(
        x.size(), dtype=x.dtype, layout=x.layout, device=device, generator=generator
    )


def brownian_noise_sampler(
    x: torch.Tensor, sigmas: torch.Tensor, seed: int
) -> Callable[[Any, Any], torch.Tensor]:
    """k-diffusion's `BrownianTreeNoiseSampler` seeded with `seed`, its tree on the CPU (as ComfyUI's)."""
    kd = k_sampling()
    positive = sigmas[sigmas > 0]
    tree = kd.BrownianTreeNoiseSampler(
        x.detach().cpu(), positive.min().cpu(), sigmas.max().cpu(), seed=int(seed)
    )

    def draw(sigma: Any, sigma_next: Any) -> torch.Tensor:
        with warnings.catch_warnings():  # torchsde compares float32 sigmas with its float64 ends: 1-ulp noise
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            return tree(torch.as_tensor(sigma).cpu(), torch.as_tensor(sigma_next).cpu()).to(x.device, x.dtype)

    return draw


@dataclass
class KLoopInput:
    """Everything one sigma-space run needs (tensors on the compute device and dtype)."""

    unet: Any
    model: ModelSigmas  # the model's training sigmas (timestep <-> sigma)
    sampler: str  # ComfyUI sampler_name (a key of SAMPLERS)
    sigmas: torch.Tensor  # the run's sigmas, already cut (sigmas.py: ksampler_sigmas, split_sigmas)
    positive: list[Entry]
    negative: list[Entry] | None  # None: no guidance
    latents: torch.Tensor  # the source latents (zeros for txt2img)
    noise: torch.Tensor  # unscaled initial noise (zeros when add_noise is off)
    seed: int
    cfg: float = 8.0
    prediction_type: str = "epsilon"
    mask: torch.Tensor | None = None  # (B or 1, 1, h, w), 1 = denoise
    conditions: Sequence[Any] = ()
    first_step: int = 0  # index of sigmas[0] in the full table (conditions' step ranges)
    total_steps: int = 0  # steps of the full table
    extras: dict[str, Any] = field(default_factory=dict)


class Denoiser:
    """k-diffusion's model protocol `model(x, sigma) -> denoised`, with ComfyUI's wrapping and CFG."""

    def __init__(
        self, req: KLoopInput, units: list[Any], do_cfg: bool, check_cancelled: Callable[[], None] | None
    ) -> None:
        self.req, self.units, self.do_cfg = req, units, do_cfg
        self.check_cancelled = check_cancelled
        positive, negative = pair_areas(req.positive, req.negative if do_cfg else None)
        self.sides = [positive] + ([negative] if negative is not None else [])
        self.table = req.sigmas
        # ComfyUI's "ddim" (euler) blends the kept region with fresh noise from seed + 1
        self.inpaint_noise = (
            comfy_noise(req.noise.shape, req.seed + 1).to(req.noise)
            if req.sampler == "ddim" and req.mask is not None
            else req.noise
        )

    def step_index(self, sigma: float) -> int:
        """The run's step a sigma belongs to (the last table sigma at or above it)."""
        above = (self.table[:-1] >= sigma * (1 - 1e-6)).nonzero()
        return int(above[-1]) if len(above) else 0

    def unet_call(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        embeds: torch.Tensor,
        added: dict[str, Any] | None,
        plain: bool,
    ) -> torch.Tensor:
        """`BaseModel.apply_model`: the denoised estimate of a batch `x` at noise levels `sigma`."""
        s = sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))
        xc = x / (s**2 + 1.0) ** 0.5
        t = self.req.model.timestep(sigma).float()
        parts: list[dict[str, Any]] = [{"added_cond_kwargs": added} if added else {}]
        if self.units:
            if not plain:
                raise SamplingError(
                    "ControlNet/adapter conditions cannot be combined with regional "
                    "conditioning yet (areas or combined prompts)"
                )
            step = StepInput(self.req.first_step + self.step_index(float(sigma[0])), t, xc, embeds)
            parts.extend(unit.step_kwargs(step) for unit in self.units)
        extra = merge_step_kwargs(parts)
        out = self.req.unet(
            xc,
            t,
            encoder_hidden_states=embeds,
            cross_attention_kwargs=extra.pop("cross_attention_kwargs", None),
            added_cond_kwargs=extra.pop("added_cond_kwargs", None),
            return_dict=False,
            **extra,
        )[0].float()
        if self.req.prediction_type == "v_prediction":
            return x * 1.0 / (s**2 + 1.0) - out * s * 1.0 / (s**2 + 1.0) ** 0.5
        return x - out * s

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        if self.check_cancelled is not None:
            self.check_cancelled()
        req = self.req
        mask = req.mask
        if mask is not None:  # KSamplerX0Inpaint: the kept region follows the noised source
            s = sigma.reshape([sigma.shape[0]] + [1] * (x.ndim - 1))
            x = x * mask + (self.inpaint_noise * s + req.latents) * (1.0 - mask)
        height, width = int(x.shape[2]), int(x.shape[3])
        outs = [torch.zeros_like(x) for _ in self.sides]
        counts = [torch.ones_like(x) * 1e-37 for _ in self.sides]
        todo = [(entry, side) for side, entries in enumerate(self.sides) for entry in entries]
        calls = batches(todo, height, width)
        plain = len(calls) == 1 and len(todo) == len(self.sides) and all(e.area is None for e, _ in todo)
        for call in calls:
            area = call[0][0].area
            x_crop = crop(x, area)
            inputs = torch.cat([x_crop] * len(call))
            embeds = torch.cat([entry.embeds for entry, _ in call])
            added = _cat_added([entry.added for entry, _ in call])
            output = self.unet_call(inputs, torch.cat([sigma] * len(call)), embeds, added, plain).chunk(
                len(call)
            )
            for chunk, (entry, side) in zip(output, call, strict=True):
                mult = weight(entry.area, entry.strength, x_crop, height, width)
                crop(outs[side], entry.area).add_(chunk * mult)
                crop(counts[side], entry.area).add_(mult)
        for side in range(len(self.sides)):
            outs[side] /= counts[side]
        if len(outs) == 1:
            denoised = outs[0]
        else:
            cond, uncond = outs
            denoised = uncond + (cond - uncond) * req.cfg
        if mask is not None:
            denoised = denoised * mask + req.latents * (1.0 - mask)
        return denoised


def _cat_added(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise SamplingError("conditioning entries of one UNet call disagree on the model's extra inputs")
    return {key: torch.cat([p[key] for p in parts if p is not None]) for key in parts[0] or {}}


def max_denoise(model: ModelSigmas, sigmas: torch.Tensor) -> bool:
    """`Sampler.max_denoise`: the run starts at (or above) the model's largest sigma."""
    first = float(sigmas[0])
    return math.isclose(model.sigma_max, first, rel_tol=1e-05) or first > model.sigma_max


def start_latents(req: KLoopInput) -> torch.Tensor:
    """`EPS.noise_scaling`: pure noise scaled to the top sigma, else source + noise * sigma_0."""
    sigma = req.sigmas[0]
    if max_denoise(req.model, req.sigmas):
        noise = req.noise * torch.sqrt(1.0 + sigma**2.0)
    else:
        noise = req.noise * sigma
    return noise + req.latents


def noise_sampler(req: KLoopInput, x: torch.Tensor) -> dict[str, Any]:
    """The `noise_sampler` argument for samplers that draw noise, seeded as ComfyUI seeds them."""
    if req.sampler in GAUSSIAN:
        return {"noise_sampler": gaussian_noise_sampler(x, req.seed)}
    if req.sampler in BROWNIAN:
        return {"noise_sampler": brownian_noise_sampler(x, req.sigmas, req.seed)}
    return {}


def sampler_function(name: str) -> Callable[..., torch.Tensor]:
    """k-diffusion's sampler function for a ComfyUI sampler_name, adapted to (model, x, sigmas, ...)."""
    if name not in SAMPLERS:
        raise SamplingError(f"sampler '{name}' is not a k-diffusion sampler (known: {', '.join(SAMPLERS)})")
    fn = getattr(k_sampling(), SAMPLERS[name])
    if name not in ("dpm_fast", "dpm_adaptive"):
        return fn

    def by_range(model: Any, x: torch.Tensor, sigmas: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]  # ComfyUI's dpm_fast_function
        if name == "dpm_fast":
            return fn(model, x, sigma_min, sigmas[0], len(sigmas) - 1, **kwargs)
        return fn(model, x, sigma_min, sigmas[0], **kwargs)

    return by_range


@torch.no_grad()
def run_k_loop(
    req: KLoopInput,
    ctx: Any = None,
    on_step: Callable[[int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run one sigma-space sampling; (latents, extras). Conditions are closed in `finally`."""
    if len(req.sigmas) <= 1:
        return req.latents, dict(req.extras)
    if int(req.unet.config.in_channels) != req.latents.shape[1]:
        raise SamplingError(
            f"the sigma-space sampler does not drive UNets of {req.unet.config.in_channels} input channels "
            "(inpainting: 9, InstructPix2Pix: 8, the x4 upscaler: 7) yet: use a diffusers scheduler"
        )
    fn = sampler_function(req.sampler)
    do_cfg = req.negative is not None and not math.isclose(req.cfg, 1.0)
    x = start_latents(req)
    batch = int(x.shape[0])
    table = req.sigmas
    timesteps = req.model.timestep(table[:-1])
    first_pos = req.positive[0].embeds
    first_neg = req.negative[0].embeds if do_cfg and req.negative else None
    # what conditions see as the UNet's prompt batch (they only join plain, one-prompt-a-side runs)
    prompt = (
        torch.cat([first_neg, first_pos])
        if first_neg is not None and first_neg.shape == first_pos.shape
        else first_pos
    )
    setup = SamplingSetup(
        unet=req.unet,
        device=x.device,
        dtype=x.dtype,
        batch_size=batch,
        do_cfg=do_cfg,
        height=int(x.shape[-2]) * VAE_SCALE,
        width=int(x.shape[-1]) * VAE_SCALE,
        timesteps=timesteps,
        num_steps=req.total_steps or len(timesteps),
        first_step=req.first_step,
        prompt_embeds=prompt,
        added_cond_kwargs=_cat_added(
            [*([req.negative[0].added] if do_cfg and req.negative else []), req.positive[0].added]
        ),
    )
    units: list[Any] = []
    try:
        for condition in req.conditions:
            units.append(condition.activate(setup, ctx))
        model = Denoiser(req, units, do_cfg, check_cancelled)
        callback = None if on_step is None else (lambda info: on_step(int(info["i"])))
        out = fn(model, x, table, extra_args={}, callback=callback, disable=True, **noise_sampler(req, x))
        extras = {**req.extras, **collect_results(units)}
    finally:
        for unit in units:
            unit.close()
    return out, extras
