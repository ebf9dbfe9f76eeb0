"""Sigma schedules as ComfyUI computes them (`comfy/samplers.py` `calculate_sigmas`, k-diffusion's
karras/exponential), for the sigma-space sampler (k_sampling.py).

Why transcribed: ComfyUI's schedulers are not diffusers' (a "normal" 20-step schedule is a linspace
over the model's *timesteps* with log-sigma interpolation; "simple" takes every n-th of the 1000
training sigmas; denoise d runs `steps` steps at the tail of an `int(steps / d)`-step schedule), so
matching ComfyUI's images needs its tables. These are small pure functions over a `ModelSigmas`
(the discrete sigmas of an SD-style beta schedule, as ComfyUI's `ModelSamplingDiscrete` builds them:
betas in float64, sigmas kept in float32). Heavy imports (torch, scipy) happen inside the functions.

`diffusion.sample` runs these tables when its scheduler is a `diffusion.k_sampler` (KSamplerSpec).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SCHEDULER_NAMES = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")


@dataclass(frozen=True)
class ModelSigmas:
    """The training noise levels of a discrete (DDPM-style) model, ascending, float32, and their logs."""

    sigmas: Any  # torch.Tensor (T,)
    log_sigmas: Any

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The nearest training timestep of each sigma (ComfyUI's `ModelSamplingDiscrete.timestep`)."""
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at fractional timesteps, log-sigmas interpolated linearly (`ModelSamplingDiscrete.sigma`)."""
        import torch

        t = torch.clamp(timestep.float(), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def model_sigmas(
    beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000, schedule: str = "scaled_linear"
) -> ModelSigmas:
    """The sigmas of a beta schedule (SD1.x defaults), as ComfyUI's `ModelSamplingDiscrete` computes them."""
    import numpy as np
    import torch

    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown beta schedule '{schedule}' (scaled_linear, linear)")
    alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return ModelSigmas(sigmas.float(), sigmas.float().log())


def config_sigmas(config: dict[str, Any]) -> ModelSigmas:
    """The training sigmas of a model from its diffusers scheduler config (beta range and schedule)."""
    schedule = str(config.get("beta_schedule", "scaled_linear"))
    if schedule not in ("scaled_linear", "linear"):
        raise ValueError(f"beta_schedule '{schedule}' has no ComfyUI sigma table (scaled_linear, linear)")
    return model_sigmas(
        float(config.get("beta_start", 0.00085)),
        float(config.get("beta_end", 0.012)),
        int(config.get("num_train_timesteps", 1000)),
        schedule,
    )


def calculate_sigmas(model: ModelSigmas, scheduler: str, steps: int) -> torch.Tensor:
    """The `steps + 1` sigmas (ending in 0) of ComfyUI's scheduler `scheduler` for `steps` steps."""
    import torch

    if scheduler == "karras":
        return _karras(steps, model.sigma_min, model.sigma_max)
    if scheduler == "exponential":
        ramp = torch.linspace(math.log(model.sigma_max), math.log(model.sigma_min), steps)
        return torch.cat([ramp.exp(), ramp.new_zeros([1])])
    if scheduler in ("normal", "sgm_uniform"):
        return _normal(model, steps, sgm=scheduler == "sgm_uniform")
    if scheduler == "simple":
        stride = len(model.sigmas) / steps
        picked = [float(model.sigmas[-(1 + int(x * stride))]) for x in range(steps)]
        return torch.FloatTensor([*picked, 0.0])
    if scheduler == "ddim_uniform":
        return _ddim_uniform(model, steps)
    if scheduler == "beta":
        return _beta(model, steps)
    raise ValueError(f"unknown ComfyUI scheduler '{scheduler}' (known: {', '.join(SCHEDULER_NAMES)})")


# samplers whose last step would land on the smallest sigma twice: KSampler computes one step more
# and drops the penultimate sigma (`KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS`)
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def sampler_sigmas(model: ModelSigmas, scheduler: str, steps: int, sampler: str = "euler") -> torch.Tensor:
    """`KSampler.calculate_sigmas`: the scheduler's table, with the penultimate-sigma rule of `sampler`."""
    import torch

    if sampler not in DISCARD_PENULTIMATE:
        return calculate_sigmas(model, scheduler, steps)
    sigmas = calculate_sigmas(model, scheduler, steps + 1)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def ksampler_sigmas(
    model: ModelSigmas, scheduler: str, steps: int, denoise: float = 1.0, sampler: str = "euler"
) -> torch.Tensor:
    """The sigmas KSampler runs: with denoise < 1, the last `steps + 1` of an `int(steps / denoise)` table."""
    import torch

    if denoise > 0.9999:
        return sampler_sigmas(model, scheduler, steps, sampler)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return sampler_sigmas(model, scheduler, int(steps / denoise), sampler)[-(steps + 1) :]


def split_sigmas(
    sigmas: torch.Tensor, start_step: int = 0, end_step: int | None = None, force_full_denoise: bool = False
) -> torch.Tensor | None:
    """`KSampler.sample`'s cut for KSamplerAdvanced: end first, then start; None when nothing is left.

    Ending early keeps `sigmas[:end + 1]`; `force_full_denoise` (return_with_leftover_noise off) sets
    the new last sigma to 0, so the last step denoises fully. A start at or past the last step means
    ComfyUI returns the input latents unchanged (None here).
    """
    if end_step is not None and end_step < len(sigmas) - 1:
        sigmas = sigmas[: end_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


def _karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    import torch

    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _normal(model: ModelSigmas, steps: int, sgm: bool) -> torch.Tensor:
    import torch

    start = model.timestep(torch.tensor(model.sigma_max))
    end = model.timestep(torch.tensor(model.sigma_min))
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(model.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigs = [float(model.sigma(t)) for t in timesteps]
    return torch.FloatTensor(sigs + [0.0] if append_zero else sigs)


def _ddim_uniform(model: ModelSigmas, steps: int) -> torch.Tensor:
    import torch

    x = 1
    if math.isclose(float(model.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs: list[float] = []
    else:
        sigs = [0.0]
    stride = max(len(model.sigmas) // steps, 1)
    while x < len(model.sigmas):
        sigs.append(float(model.sigmas[x]))
        x += stride
    return torch.FloatTensor(sigs[::-1])


def _beta(model: ModelSigmas, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    import numpy as np
    import scipy.stats
    import torch

    total = len(model.sigmas) - 1
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total)
    sigs: list[float] = []
    last = -1.0
    for t in ts:
        if t != last:
            sigs.append(float(model.sigmas[int(t)]))
        last = t
    return torch.FloatTensor([*sigs, 0.0])
