"""ControlNet units apply in the sigma-space sampler (diffusion.k_sampler) as in the diffusers loop:
the ControlNet sees the UNet's scaled input and timestep, its residuals go into the same UNet call,
its step range counts the run's sigma steps. Reference: k-diffusion's sampler over a denoiser that
calls the ControlNet and the UNet directly (ComfyUI's wrapping, as in tests/diffusion/test_k_sampling.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nodegraph_control.controlnet import prepare_image
from nodegraph_control.units import ControlNetUnit
from nodegraph_core.types import Image
from nodegraph_diffusion.k_diffusion_import import k_sampling
from nodegraph_diffusion.k_sampler_nodes import k_sampler
from nodegraph_diffusion.latent_nodes import empty_latents
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.sigmas import model_sigmas
from nodegraph_diffusion.types import Conditioning

CFG, SEED, STEPS = 5.0, 21, 3
MODEL = model_sigmas()


@pytest.mark.parametrize("strength, end", [(0.8, 1.0), (1.2, 0.7)])
def test_controlnet_in_the_k_sampler_equals_direct_calls(
    strength: float,
    end: float,
    make_ctx: Any,
    tiny: dict[str, Any],
    embeds: Any,
    handle: Any,
    load_control: Any,
    control_image: Any,
) -> None:
    ctx = make_ctx()
    model = load_model(ctx, path="builtin:tinyworld")
    pos, neg = embeds
    pixels = control_image(4)
    unit = ControlNetUnit(handle("tinyworld-pose"), Image(pixels), strength, 0.0, end)
    spec = k_sampler(model_scheduler=model.scheduler, sampler="euler", scheduler="karras")
    common = {
        "unet": model.unet,
        "scheduler": spec,
        "positive": Conditioning(pos),
        "negative": Conditioning(neg),
        "steps": STEPS,
        "cfg": CFG,
        "seed": SEED,
        "latents": empty_latents(width=64, height=64),
    }
    got = sample(ctx, conditions=[unit], **common).samples

    kd, unet, net = k_sampling(), tiny["unet"], load_control("tinyworld-pose")
    image = prepare_image(pixels, 64, 64, 1, "cpu", torch.float32, True, False)
    sigmas = kd.get_sigmas_karras(STEPS, MODEL.sigma_min, MODEL.sigma_max)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        step = int((sigmas[:-1] == sigma[0]).nonzero()[0])
        xx, ss = torch.cat([x, x]), torch.cat([sigma, sigma])
        s = ss.view(-1, 1, 1, 1)
        xc, t, emb = xx / (s**2 + 1.0) ** 0.5, MODEL.timestep(ss).float(), torch.cat([neg, pos])
        extra: dict[str, Any] = {}
        if (step + 1) / STEPS <= end:
            down, mid = net(
                xc,
                t,
                encoder_hidden_states=emb,
                controlnet_cond=image,
                conditioning_scale=strength,
                guess_mode=False,
                return_dict=False,
            )
            extra = {"down_block_additional_residuals": list(down), "mid_block_additional_residual": mid}
        eps = unet(xc, t, encoder_hidden_states=emb, return_dict=False, **extra)[0]
        uncond, cond = (xx - eps.float() * s).chunk(2)
        return uncond + (cond - uncond) * CFG

    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        want = kd.sample_euler(denoiser, noise * torch.sqrt(1.0 + sigmas[0] ** 2.0), sigmas, disable=True)
    assert float((got - want).abs().max()) == 0.0
    plain = sample(ctx, **common).samples
    assert float((got - plain).abs().max()) > 1e-3  # the unit acts
