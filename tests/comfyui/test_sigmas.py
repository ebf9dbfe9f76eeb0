"""ComfyUI's sigma tables, held to k-diffusion's own functions and to independently computed values."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_comfyui.samplers import SCHEDULES
from nodegraph_diffusion.sigmas import SCHEDULER_NAMES, calculate_sigmas, ksampler_sigmas, model_sigmas


def _k_diffusion() -> tuple[Any, Any]:
    """k-diffusion's sampling and external modules, loaded without its package __init__ (which needs
    clip, kornia, skimage, ...); the two helpers they import but these functions never call are stubbed."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    root = Path(next(iter(spec.submodule_search_locations)))
    saved = {k: sys.modules.get(k) for k in ("k_diffusion", "k_diffusion.utils", "torchdiffeq")}
    try:
        package = types.ModuleType("k_diffusion")
        package.__path__ = [str(root)]
        sys.modules["k_diffusion"] = package
        sys.modules["k_diffusion.utils"] = types.ModuleType("k_diffusion.utils")
        if importlib.util.find_spec("torchdiffeq") is None:
            stub = types.ModuleType("torchdiffeq")
            stub.odeint = None  # type: ignore[attr-defined]
            sys.modules["torchdiffeq"] = stub
        modules = []
        for name in ("sampling", "external"):
            loader = importlib.util.spec_from_file_location(f"k_diffusion.{name}", root / f"{name}.py")
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[f"k_diffusion.{name}"] = module
            setattr(package, name, module)
            loader.loader.exec_module(module)
            modules.append(module)
        return modules[0], modules[1]
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
        sys.modules.pop("k_diffusion.sampling", None)
        sys.modules.pop("k_diffusion.external", None)


MODEL = model_sigmas()
STEPS = [1, 2, 7, 20, 30]


def test_sd15_noise_range() -> None:
    assert MODEL.sigma_max == pytest.approx(14.6146, abs=1e-4)
    assert MODEL.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert len(MODEL.sigmas) == 1000 and MODEL.sigmas.dtype == torch.float32


@pytest.mark.parametrize("steps", STEPS)
def test_karras_exponential_and_normal_equal_k_diffusion(steps: int) -> None:
    sampling, external = _k_diffusion()
    lo, hi = MODEL.sigma_min, MODEL.sigma_max
    assert torch.equal(calculate_sigmas(MODEL, "karras", steps), sampling.get_sigmas_karras(steps, lo, hi))
    assert torch.equal(
        calculate_sigmas(MODEL, "exponential", steps), sampling.get_sigmas_exponential(steps, lo, hi)
    )
    schedule = external.DiscreteSchedule(MODEL.sigmas, quantize=False)
    assert torch.equal(calculate_sigmas(MODEL, "normal", steps), schedule.get_sigmas(steps))


@pytest.mark.parametrize("steps", STEPS)
def test_table_schedulers_against_independent_values(steps: int) -> None:
    table = MODEL.sigmas.double().numpy()
    simple = table[::-1][(np.arange(steps) * (1000 / steps)).astype(int)]
    assert np.array_equal(
        calculate_sigmas(MODEL, "simple", steps).numpy(), np.append(simple, 0).astype(np.float32)
    )
    stride = max(1000 // steps, 1)
    ddim = np.append(table[1::stride][::-1], 0.0)
    assert np.array_equal(calculate_sigmas(MODEL, "ddim_uniform", steps).numpy(), ddim.astype(np.float32))
    # sgm_uniform: steps timesteps evenly from 999 towards 0, the last one left out, then 0
    t = np.linspace(999, 0, steps + 1)[:-1]
    logs = np.log(table)
    lo = np.floor(t).astype(int)
    hi = np.ceil(t).astype(int)
    expected = np.exp((1 - (t - lo)) * logs[lo] + (t - lo) * logs[hi])
    got = calculate_sigmas(MODEL, "sgm_uniform", steps).numpy()
    assert got[-1] == 0 and np.allclose(got[:-1], expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_descends_to_zero(name: str) -> None:
    sigmas = calculate_sigmas(MODEL, name, 20)
    assert sigmas[-1] == 0 and bool((sigmas[:-1] > 0).all())
    assert bool((sigmas[1:] < sigmas[:-1]).all()) and float(sigmas[0]) <= MODEL.sigma_max + 1e-4
    assert len(sigmas) == 21 or name == "beta"  # beta drops repeated timesteps


def test_denoise_takes_the_tail_of_a_longer_schedule() -> None:
    tail = ksampler_sigmas(MODEL, "normal", 10, denoise=0.5)
    assert torch.equal(tail, calculate_sigmas(MODEL, "normal", 20)[-11:])
    assert len(ksampler_sigmas(MODEL, "karras", 10, 0.0)) == 0


def test_the_import_accepts_every_comfyui_scheduler_name() -> None:
    assert set(SCHEDULES) == set(SCHEDULER_NAMES)


@pytest.mark.parametrize("seed, shape", [(8566257, (1, 4, 8, 8)), (2**40 + 3, (2, 4, 12, 8))])
def test_sampler_noise_is_comfyuis_noise(seed: int, shape: tuple[int, ...]) -> None:
    """ComfyUI's `prepare_noise`: `torch.randn(shape, generator=torch.manual_seed(seed), device="cpu")`."""
    from nodegraph_diffusion.sampling import draw_noise, make_generator

    with torch.random.fork_rng(devices=[]):
        comfy = torch.randn(shape, generator=torch.manual_seed(seed), device="cpu")
    assert torch.equal(draw_noise(shape, make_generator(seed)), comfy)
