"""ComfyUI's sampler_name × scheduler pairs as nodegraph `diffusion.scheduler` settings.

What the import uses today: diffusers' schedulers (through `diffusion.scheduler`), the nearest
equivalent of each ComfyUI sampler, with karras/exponential/beta spacing mapped to diffusers' flags.
These are *not* ComfyUI's k-diffusion sigma tables and step rules (see docs/comfyui.md); a pair
with no close equivalent is refused rather than silently swapped.
"""

from __future__ import annotations

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
    "ddpm": "ddpm",
    "uni_pc": "unipc",
    "uni_pc_bh2": "unipc",
    "deis": "deis",
    "lcm": "lcm",
}

# scheduler -> diffusion.scheduler inputs; "normal" keeps the model's own timestep spacing
SCHEDULES: dict[str, dict[str, object]] = {
    "normal": {},
    "karras": {"karras": True},
    "exponential": {"exponential": True},
    "beta": {"beta": True},
    "simple": {"timestep_spacing": "trailing"},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "ddim_uniform": {"timestep_spacing": "leading"},
}


def scheduler_settings(sampler_name: str, scheduler: str) -> tuple[str, dict[str, object]] | str:
    """(nodegraph scheduler name, extra inputs), or a message saying why the pair has no counterpart."""
    name = SAMPLERS.get(sampler_name)
    if name is None:
        return f"sampler '{sampler_name}' has no nodegraph counterpart yet (known: {', '.join(SAMPLERS)})"
    spacing = SCHEDULES.get(scheduler)
    if spacing is None:
        return f"scheduler '{scheduler}' has no nodegraph counterpart yet (known: {', '.join(SCHEDULES)})"
    return name, dict(spacing)
