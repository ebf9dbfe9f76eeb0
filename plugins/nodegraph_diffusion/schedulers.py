"""Schedulers by the names people know (A1111/ComfyUI), mapped onto diffusers' scheduler classes.

Only a lookup: each name is a diffusers class plus config overrides, built with
`cls.from_config(model_config, **overrides)` exactly as diffusers' docs swap a pipeline's scheduler,
so sampling with a name here equals a pipeline given the same scheduler. No scheduler maths lives here.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
import types
from typing import Annotated, Any, Literal

from pydantic import Field

from nodegraph.api import InputError, node
from nodegraph_diffusion.types import SchedulerSpec

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "lms_karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm2_a_karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "dpmpp_sde_karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
    "dpm_single": ("DPMSolverSinglestepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
ALIASES = {
    "euler_ancestral": "euler_a",
    "k_euler": "euler",
    "k_euler_a": "euler_a",
    "k_lms": "lms",
    "k_heun": "heun",
    "k_dpm_2": "dpm2",
    "dpm_2": "dpm2",
    "k_dpm_2_a": "dpm2_a",
    "dpm_2_ancestral": "dpm2_a",
    "dpm2_ancestral": "dpm2_a",
    "dpmpp_2m_k": "dpmpp_2m_karras",
    "uni_pc": "unipc",
    "dpmsolver": "dpmpp_2m",
}
DEFAULT = "default"  # the model's own scheduler (class and config as shipped with the model)

OPTION_KEYS = {
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
    "beta": "use_beta_sigmas",
}


def canonical_name(name: str) -> str:
    """'DPM++ 2M Karras' -> 'dpmpp_2m_karras', 'Euler a' -> 'euler_a'; raises InputError if unknown."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower().replace("++", "pp").replace("+", "p"))
    key = ALIASES.get(key, key)
    if key == DEFAULT or key in SCHEDULERS:
        return key
    close = difflib.get_close_matches(key, [*SCHEDULERS, *ALIASES], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"unknown scheduler '{name}'{hint} (known: {', '.join(SCHEDULERS)})", field="name")


class _DeferredModule(types.ModuleType):
    """Stands in `sys.modules` for a module until one of its attributes is read, then imports it.

    Its own `__file__`/`__spec__` are plain attributes, so tools scanning `sys.modules` (`inspect`,
    which torch runs while diffusers registers its ops) do not trigger the import.
    """

    def __getattr__(self, attr: str) -> Any:  # only for attributes the stand-in lacks
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


def defer_scipy_stats() -> None:
    """Make `scipy.stats` load on first use instead of at import (about 1 s of a cold run).

    Most of diffusers' scheduler modules run `import scipy.stats` at the top, but only beta sigmas
    (`use_beta_sigmas`) ever call it (`scipy.stats.beta.ppf`). A stand-in module keeps those modules
    and their results unchanged and imports scipy.stats when an attribute is first read.
    """
    if "scipy.stats" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("scipy.stats")
    except ImportError:  # no scipy: diffusers checks is_scipy_available() itself
        return
    if spec is None:
        return
    stand_in = _DeferredModule("scipy.stats")
    stand_in.__file__ = spec.origin
    stand_in.__spec__ = spec
    sys.modules["scipy.stats"] = stand_in
    sys.modules["scipy"].stats = stand_in


def _class(class_name: str) -> Any:
    defer_scipy_stats()
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise InputError(f"scheduler class '{class_name}' is not available in this diffusers", field="name")
    return cls


def _accepts(cls: Any, key: str) -> bool:
    return key in inspect.signature(cls.__init__).parameters


def resolve(spec: SchedulerSpec) -> tuple[Any, dict[str, Any]]:
    """(diffusers class, config) for a spec: the model's config, then the name's and the user's overrides."""
    config = dict(spec.base_config)
    name = canonical_name(spec.name)
    if name == DEFAULT:
        cls, overrides = _class(str(config.get("_class_name", "PNDMScheduler"))), {}
    else:
        class_name, overrides = SCHEDULERS[name]
        cls = _class(class_name)
    overrides = {**overrides, **dict(spec.options)}
    for key in overrides:
        if not _accepts(cls, key):
            raise InputError(f"scheduler '{spec.name}' ({cls.__name__}) has no option '{key}'", field="name")
    for key, value in list(config.items()):
        if isinstance(value, tuple):
            config[key] = list(value)
    return cls, {**config, **overrides}


def make_scheduler(spec: SchedulerSpec) -> Any:
    """A fresh diffusers scheduler for `spec` (fresh each call: schedulers keep per-run state)."""
    cls, config = resolve(spec)
    if cls.__name__ == "DPMSolverSDEScheduler":
        try:
            import torchsde  # noqa: F401
        except ImportError as exc:
            raise InputError("scheduler 'dpmpp_sde' needs the torchsde package (pip install torchsde)",
                             field="name") from exc
    return cls.from_config(config)


@node("diffusion.scheduler", version="1.0.0")
def scheduler(
    model_scheduler: Annotated[SchedulerSpec,
                               Field(description="The model's scheduler (its config is kept)")],
    name: Annotated[str, Field(description="ddim, ddpm, pndm, lms, euler, euler_a, heun, dpm2, dpm2_a, "
                                           "dpmpp_2m, dpmpp_2m_karras, dpmpp_2m_sde, dpmpp_sde, unipc, deis, "
                                           "lcm, or 'default' (the model's own); A1111 names work too")],
    karras: Annotated[bool, Field(description="Karras sigma spacing")] = False,
    exponential: Annotated[bool, Field(description="Exponential sigma spacing")] = False,
    beta: Annotated[bool, Field(description="Beta-distribution sigma spacing")] = False,
    prediction_type: Annotated[Literal["epsilon", "v_prediction", "sample"] | None,
                               Field(description="Override what the model predicts (v_prediction for "
                                                 "v-models)")] = None,
    timestep_spacing: Annotated[Literal["leading", "trailing", "linspace"] | None,
                                Field(description="Override how timesteps are spread")] = None,
    rescale_zero_snr: Annotated[bool, Field(description="Rescale betas to zero terminal SNR "
                                                        "(for v-models trained that way)")] = False,
) -> SchedulerSpec:
    """Choose the sampling scheduler by name, over the model's scheduler config."""
    options: dict[str, Any] = {}
    for flag, on in (("karras", karras), ("exponential", exponential), ("beta", beta)):
        if on:
            options[OPTION_KEYS[flag]] = True
    if sum(1 for on in (karras, exponential, beta) if on) > 1:
        raise InputError("choose at most one of karras, exponential, beta", field="karras")
    if prediction_type is not None:
        options["prediction_type"] = prediction_type
    if timestep_spacing is not None:
        options["timestep_spacing"] = timestep_spacing
    if rescale_zero_snr:
        options["rescale_betas_zero_snr"] = True
    spec = SchedulerSpec(name=canonical_name(name), base_config=model_scheduler.base_config,
                         options=tuple(sorted(options.items())))
    resolve(spec)  # fail here, naming this node, if an option does not fit the class
    return spec
