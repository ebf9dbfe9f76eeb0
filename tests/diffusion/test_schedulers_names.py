"""Scheduler names -> diffusers classes: every name builds and steps; options; errors that teach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

from nodegraph.api import InputError
from nodegraph_diffusion.schedulers import SCHEDULERS, canonical_name, make_scheduler, scheduler
from nodegraph_diffusion.tiny import SD15_SCHEDULER_CONFIG
from nodegraph_diffusion.types import SchedulerSpec

BASE = SchedulerSpec("default", tuple(sorted(SD15_SCHEDULER_CONFIG.items())))


def spec(name: str, **options: Any) -> SchedulerSpec:
    return SchedulerSpec(name, BASE.base_config, tuple(sorted(options.items())))


@pytest.mark.parametrize("name", [*SCHEDULERS, "default"])
def test_every_name_constructs_and_steps(name: str) -> None:
    sched = make_scheduler(spec(name))
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g) * sched.init_noise_sigma
    for t in sched.timesteps:
        model_in = sched.scale_model_input(x, t)
        kwargs = {"generator": g} if "generator" in sched.step.__code__.co_varnames else {}
        x = sched.step(torch.randn(model_in.shape, generator=g) * 0.1, t, x, **kwargs).prev_sample
    assert torch.isfinite(x).all()


def test_names_map_to_diffusers_config_like_a_pipeline_swap() -> None:
    """`make_scheduler` == `Cls.from_config(pipe.scheduler.config, **overrides)` (diffusers' swap)."""
    ours = make_scheduler(spec("dpmpp_2m_karras"))
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(
        diffusers.PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config, use_karras_sigmas=True)
    assert dict(ours.config) == dict(theirs.config)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    assert torch.equal(ours.timesteps, theirs.timesteps) and torch.equal(ours.sigmas, theirs.sigmas)
    assert type(make_scheduler(spec("euler_a"))).__name__ == "EulerAncestralDiscreteScheduler"
    assert make_scheduler(spec("dpmpp_2m_sde")).config.algorithm_type == "sde-dpmsolver++"
    assert type(make_scheduler(BASE)).__name__ == "PNDMScheduler"


def test_a1111_and_comfy_names() -> None:
    assert canonical_name("DPM++ 2M Karras") == "dpmpp_2m_karras"
    assert canonical_name("Euler a") == "euler_a"
    assert canonical_name("euler_ancestral") == "euler_a"
    assert canonical_name("UniPC") == "unipc"
    assert canonical_name("DPM2 a") == "dpm2_a"


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(InputError, match="did you mean.*dpmpp_2m") as err:
        canonical_name("dpmpp_2n")
    assert err.value.field == "name"


def test_node_options() -> None:
    out = scheduler(BASE, "euler", karras=True, prediction_type="v_prediction", timestep_spacing="trailing",
                    rescale_zero_snr=True)
    built = make_scheduler(out)
    assert built.config.use_karras_sigmas and built.config.prediction_type == "v_prediction"
    assert built.config.timestep_spacing == "trailing" and built.config.rescale_betas_zero_snr
    assert make_scheduler(scheduler(BASE, "dpmpp_2m", exponential=True)).config.use_exponential_sigmas
    assert out.base_config == BASE.base_config and hash(out)


def test_option_the_class_lacks_is_an_input_error() -> None:
    with pytest.raises(InputError, match="karras"):
        scheduler(BASE, "ddim", karras=True)
    with pytest.raises(InputError, match="at most one"):
        scheduler(BASE, "euler", karras=True, exponential=True)


def test_default_uses_model_scheduler_config(tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "scheduler" / "scheduler_config.json").read_text())
    built = make_scheduler(SchedulerSpec("default", tuple(sorted(config.items()))))
    assert built.config.steps_offset == 1 and built.config.skip_prk_steps
