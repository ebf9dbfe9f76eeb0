"""ControlNet and T2I-Adapter units in our sampler equal diffusers' pipelines bit for bit (CPU fp32).

The tiny control models are perturbed (a fresh ControlNet is an exact no-op), and every test also checks
that the condition changes the result, so equality cannot hold by accident.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nodegraph_control.controlnet import ControlNetUnit
from nodegraph_control.t2i_adapter import AdapterUnit
from nodegraph_core.types import Image

STEPS, SEED = 5, 3  # the `run_units` fixture's defaults (conftest.py); a mismatch fails every test


def cn_pipeline(tiny: dict[str, Any], controlnet: Any) -> Any:
    from diffusers import PNDMScheduler, StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=tiny["vae"],
        text_encoder=tiny["text_encoder"],
        tokenizer=tiny["tokenizer"],
        unet=tiny["unet"],
        controlnet=controlnet,
        scheduler=PNDMScheduler.from_config(tiny["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe: Any, embeds: tuple[torch.Tensor, torch.Tensor], **kwargs: Any) -> torch.Tensor:
    pos, neg = embeds
    return pipe(
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(SEED),
        output_type="latent",
        **kwargs,
    ).images


def test_one_controlnet_equals_pipeline(tiny, embeds, load_control, handle, run_units, control_image):
    image = control_image(1)
    pipe = cn_pipeline(tiny, load_control("tinyworld-pose"))
    theirs = call(
        pipe,
        embeds,
        image=image,
        controlnet_conditioning_scale=0.8,
        control_guidance_start=0.2,
        control_guidance_end=0.8,
    )
    ours = run_units([ControlNetUnit(handle("tinyworld-pose"), Image(image), 0.8, 0.2, 0.8)])
    assert (ours - theirs).abs().max().item() == 0.0
    plain = run_units([])
    assert (ours - plain).abs().max().item() > 1e-2  # the ControlNet acts


def test_controlnet_image_is_resized_like_pipeline(
    tiny, embeds, load_control, handle, run_units, control_image
):
    image = control_image(2, size=96)  # not the generation size: VaeImageProcessor resizes it
    pipe = cn_pipeline(tiny, load_control("tinyworld-pose"))
    theirs = call(pipe, embeds, image=image)
    ours = run_units([ControlNetUnit(handle("tinyworld-pose"), Image(image))])
    assert torch.equal(ours, theirs)


def test_guess_mode_equals_pipeline(tiny, embeds, load_control, handle, run_units, control_image):
    image = control_image(3)
    pipe = cn_pipeline(tiny, load_control("tinyworld-pose"))
    theirs = call(pipe, embeds, image=image, guess_mode=True, controlnet_conditioning_scale=1.3)
    ours = run_units([ControlNetUnit(handle("tinyworld-pose"), Image(image), 1.3, guess_mode=True)])
    assert torch.equal(ours, theirs)
    normal = run_units([ControlNetUnit(handle("tinyworld-pose"), Image(image), 1.3)])
    assert not torch.equal(ours, normal)


def test_several_controlnets_equal_multicontrolnet_pipeline(
    tiny, embeds, load_control, handle, run_units, control_image
):
    pose, edge = control_image(4), control_image(5)
    pipe = cn_pipeline(tiny, [load_control("tinyworld-pose"), load_control("tinyworld-edge")])
    theirs = call(
        pipe,
        embeds,
        image=[pose, edge],
        controlnet_conditioning_scale=[0.9, 1.4],
        control_guidance_start=[0.0, 0.3],
        control_guidance_end=[0.7, 1.0],
    )
    units = [
        ControlNetUnit(handle("tinyworld-pose"), Image(pose), 0.9, 0.0, 0.7),
        ControlNetUnit(handle("tinyworld-edge"), Image(edge), 1.4, 0.3, 1.0),
    ]
    ours = run_units(units)
    assert (ours - theirs).abs().max().item() == 0.0
    assert not torch.equal(ours, run_units(units[:1]))
    assert not torch.equal(ours, run_units(units[1:]))


def adapter_pipeline(tiny: dict[str, Any], adapter: Any) -> Any:
    from diffusers import PNDMScheduler, StableDiffusionAdapterPipeline

    pipe = StableDiffusionAdapterPipeline(
        vae=tiny["vae"],
        text_encoder=tiny["text_encoder"],
        tokenizer=tiny["tokenizer"],
        unet=tiny["unet"],
        adapter=adapter,
        scheduler=PNDMScheduler.from_config(tiny["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_t2i_adapter_equals_pipeline(tiny, embeds, load_control, handle, run_units, control_image):
    image = control_image(6)
    pipe = adapter_pipeline(tiny, load_control("tinyworld-adapter"))
    theirs = call(pipe, embeds, image=image, adapter_conditioning_scale=0.7)
    ours = run_units([AdapterUnit(handle("tinyworld-adapter"), Image(image), 0.7)])
    assert (ours - theirs).abs().max().item() == 0.0
    assert (ours - run_units([])).abs().max().item() > 1e-2


def test_t2i_adapter_end_limits_steps(handle, run_units, control_image):
    unit = AdapterUnit(handle("tinyworld-adapter"), Image(control_image(6)), 0.7, end=0.0)
    assert torch.equal(run_units([unit]), run_units([]))
    half = AdapterUnit(handle("tinyworld-adapter"), Image(control_image(6)), 0.7, end=0.5)
    full = AdapterUnit(handle("tinyworld-adapter"), Image(control_image(6)), 0.7)
    assert not torch.equal(run_units([half]), run_units([full]))


@torch.no_grad()
def reference_loop(tiny, embeds, controlnet, cn_image, cn_scale, adapter, ad_image, ad_weight):
    """ControlNet + T2I-Adapter written out by hand: one UNet call per step with both residual kinds,
    each prepared as its own pipeline prepares it (no stock pipeline combines them)."""
    from diffusers import PNDMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = PNDMScheduler.from_config(tiny["scheduler"].config)
    unet = tiny["unet"]
    pos, neg = embeds
    prompt_embeds = torch.cat([neg, pos])
    generator = torch.Generator().manual_seed(SEED)
    latents = randn_tensor((1, 4, 8, 8), generator=generator) * scheduler.init_noise_sigma
    scheduler.set_timesteps(STEPS)
    cond = torch.cat([cn_image] * 2)
    state = [torch.cat([f * ad_weight] * 2) for f in adapter(ad_image)]
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        down, mid = controlnet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            controlnet_cond=cond,
            conditioning_scale=cn_scale,
            return_dict=False,
        )
        noise = unet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            down_intrablock_additional_residuals=[s.clone() for s in state],
            return_dict=False,
        )[0]
        uncond, text = noise.chunk(2)
        latents = scheduler.step(uncond + 7.5 * (text - uncond), t, latents, return_dict=False)[0]
    return latents


def test_controlnet_plus_adapter_equals_hand_loop(
    tiny, embeds, load_control, handle, run_units, control_image
):
    cn_image, ad_image = control_image(7), control_image(8)
    cn_unit = ControlNetUnit(handle("tinyworld-edge"), Image(cn_image), 0.9)
    ad_unit = AdapterUnit(handle("tinyworld-adapter"), Image(ad_image), 0.6)
    both = run_units([cn_unit, ad_unit])
    reference = reference_loop(
        tiny,
        embeds,
        load_control("tinyworld-edge"),
        cn_image,
        0.9,
        load_control("tinyworld-adapter"),
        ad_image,
        0.6,
    )
    assert (both - reference).abs().max().item() == 0.0
    assert not torch.equal(both, run_units([cn_unit]))
    assert not torch.equal(both, run_units([ad_unit]))
    assert torch.equal(run_units([ad_unit, cn_unit]), both)  # different residual kinds: order-free


def test_fresh_controlnet_is_a_no_op(tiny, run_units, control_image, tmp_path):
    """Why the built-in tiny ControlNets are perturbed: from_unet's zero convolutions add exact zeros."""
    from diffusers import ControlNetModel
    from nodegraph_control.models import ControlNetHandle

    ControlNetModel.from_unet(tiny["unet"]).save_pretrained(tmp_path / "fresh")
    unit = ControlNetUnit(
        ControlNetHandle(str(tmp_path / "fresh"), "fresh", "diffusers"), Image(control_image(9))
    )
    assert torch.equal(run_units([unit]), run_units([]))


def test_units_share_one_resident_model(handle, run_units, control_image, make_ctx):
    ctx = make_ctx()
    units = [ControlNetUnit(handle("tinyworld-pose"), Image(control_image(i)), 0.5) for i in (10, 11)]
    run_units(units, ctx=ctx)
    run_units(units[:1], ctx=ctx)
    assert ctx.resources.load_count(handle("tinyworld-pose").fingerprint) == 1


def test_closed_after_failure(handle, run_units, control_image, make_ctx):
    """A unit whose image batch does not fit fails cleanly, and the models it pinned are released."""
    from nodegraph.api import InputError

    ctx = make_ctx()
    good = ControlNetUnit(handle("tinyworld-pose"), Image(control_image(12)))
    bad = ControlNetUnit(handle("tinyworld-edge"), Image(torch.rand(3, 3, 64, 64)))
    with pytest.raises(InputError, match="batch of 3 control images"):
        run_units([good, bad], ctx=ctx)
    assert all(entry.pins == 0 for entry in ctx.resources._entries.values())
