"""Reference pieces of the k-sampler tests, written from ComfyUI's sources (see test_k_sampling.py):
its noise, sigma tables from k-diffusion's functions, its denoiser wrapping with CFG on the denoised
batch [uncond, cond], its noise samplers; and loaders for the fixtures those tests share."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from nodegraph_diffusion.k_diffusion_import import PRIVATE, k_sampling
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.sigmas import model_sigmas
from nodegraph_diffusion.types import Conditioning

SHAPE = (1, 4, 8, 8)
CFG = 6.5


def load_external() -> Any:
    """k-diffusion's external.py (its denoiser wrappers), beside the sampling module it imports."""
    k_sampling()
    root = Path(sys.modules[PRIVATE].__path__[0])
    spec = importlib.util.spec_from_file_location(f"{PRIVATE}.external", root / "external.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_unet(tiny_dir: Path) -> Any:
    from diffusers import UNet2DConditionModel
    from nodegraph_diffusion.loading import own_storage

    model = UNet2DConditionModel.from_pretrained(tiny_dir / "unet", local_files_only=True).eval()
    own_storage(model)
    return model


def random_parts(ctx: Any) -> tuple[Any, Conditioning, Conditioning]:
    """The built-in tiny model and two random prompt embeddings."""
    model = load_model(ctx, path="builtin:tinyworld")
    g = torch.Generator().manual_seed(0)
    return (
        model,
        Conditioning(torch.randn((1, 77, 32), generator=g)),
        Conditioning(torch.randn((1, 77, 32), generator=g)),
    )


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
        eps = unet(
            xx / (s**2 + 1.0) ** 0.5, t, encoder_hidden_states=torch.cat([neg, pos]), return_dict=False
        )[0]
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
