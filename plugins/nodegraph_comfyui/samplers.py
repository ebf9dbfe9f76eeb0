"""ComfyUI's sampler_name × scheduler pairs as nodegraph sampler settings.

Every sampler k-diffusion has (k_sampler_nodes.K_SAMPLERS) imports as a `diffusion.k_sampler`: ComfyUI's
own semantics (its sigma tables, denoiser, CFG, noise and step rules, k-diffusion's sampler functions).
The few ComfyUI samplers k-diffusion lacks (ddpm, uni_pc, deis, lcm, ...) fall back to the nearest
diffusers scheduler through `diffusion.scheduler` (NOT ComfyUI's semantics, said in docs/comfyui.md);
a pair with no counterpart is refused rather than silently swapped.
"""

from __future__ import annotations

from nodegraph_diffusion.k_sampler_nodes import K_SAMPLERS, K_SCHEDULES

# ComfyUI samplers k-diffusion lacks -> nearest diffusers scheduler name
FALLBACKS: dict[str, str] = {
    "ddpm": "ddpm",
    "uni_pc": "unipc",
    "uni_pc_bh2": "unipc",
    "deis": "deis",
    "lcm": "lcm",
}
# every sampler_name the import accepts -> the diffusers scheduler it exports back from (export.py)
SAMPLERS: dict[str, str] = {
    "euler": "euler",
    "euler_ancestral": "euler_a",
    "heun": "heun",
    "dpm_2": "dpm2",
    "dpm_2_ancestral": "dpm2_a",
    "lms": "lms",
    "dpmpp_2m": "dpmpp_2m",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_sde": "dpmpp_sde",
    "ddim": "ddim",
    **FALLBACKS,
}

# scheduler -> diffusion.scheduler inputs for the fallbacks; "normal" keeps the model's own spacing
SCHEDULES: dict[str, dict[str, object]] = {
    "normal": {},
    "karras": {"karras": True},
    "exponential": {"exponential": True},
    "beta": {"beta": True},
    "simple": {"timestep_spacing": "trailing"},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "ddim_uniform": {"timestep_spacing": "leading"},
}


def k_sampler_settings(sampler_name: str, scheduler: str) -> bool:
    """Whether the pair runs on the sigma-space sampler (ComfyUI's semantics)."""
    return sampler_name in K_SAMPLERS and scheduler in K_SCHEDULES


def scheduler_settings(sampler_name: str, scheduler: str) -> tuple[str, dict[str, object]] | str:
    """(diffusers scheduler name, extra inputs) of a fallback pair, or a message saying why it has none."""
    name = FALLBACKS.get(sampler_name)
    if name is None:
        known = ", ".join([*K_SAMPLERS, *FALLBACKS])
        return f"sampler '{sampler_name}' has no nodegraph counterpart yet (known: {known})"
    spacing = SCHEDULES.get(scheduler)
    if spacing is None:
        return f"scheduler '{scheduler}' has no nodegraph counterpart yet (known: {', '.join(SCHEDULES)})"
    return name, dict(spacing)
