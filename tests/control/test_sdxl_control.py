"""Control units on SDXL equal diffusers' SDXL pipelines bit for bit (CPU fp32, builtin:tinyxl).

Several ControlNets (StableDiffusionXLControlNetPipeline with a list of nets), a T2I-Adapter-XL
(StableDiffusionXLAdapterPipeline) and ControlNet + T2I-Adapter together (no pipeline does both: a
loop assembled from the SDXL pipeline's own calls). The control models are random and non-zero
(a fresh ControlNet is an exact no-op), and every test checks that each unit changes the result.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nodegraph_core.types import Image

from tests.control.sdxl_helpers import CFG, PROMPT, SEED, STEPS, loaded, ours, pipeline, pixels, scene, theirs


def test_several_sdxl_controlnets_equal_multicontrolnet_pipeline(make_ctx, xl_base, xl_nets):
    from diffusers import StableDiffusionXLControlNetPipeline
    from nodegraph_control.nodes import controlnet, load_controlnet

    ctx = make_ctx()
    first, second = pixels(1), scene()
    net_a, net_b = load_controlnet(ctx, str(xl_nets["cn-a"])), load_controlnet(ctx, str(xl_nets["cn-b"]))
    units = [controlnet(net_a, Image(first), strength=0.9, start=0.0, end=0.7),
             controlnet(net_b, Image(second), strength=1.3, start=0.3, end=1.0)]
    both = ours(ctx, units)
    pipe = pipeline(StableDiffusionXLControlNetPipeline, xl_base,
                    controlnet=[loaded("controlnet", xl_nets["cn-a"]), loaded("controlnet", xl_nets["cn-b"])])
    reference = theirs(pipe, image=[first, second], controlnet_conditioning_scale=[0.9, 1.3],
                       control_guidance_start=[0.0, 0.3], control_guidance_end=[0.7, 1.0])
    assert (both - reference).abs().max().item() == 0.0
    assert not torch.equal(both, ours(ctx, units[:1]))  # each net acts
    assert not torch.equal(both, ours(ctx, units[1:]))


def test_t2i_adapter_xl_equals_sdxl_adapter_pipeline(make_ctx, xl_base, xl_nets):
    from diffusers import StableDiffusionXLAdapterPipeline
    from nodegraph_control.nodes import load_t2i_adapter, t2i_adapter

    ctx = make_ctx()
    image = pixels(4)
    handle = load_t2i_adapter(ctx, str(xl_nets["adapter"]))
    unit = t2i_adapter(handle, Image(image), weight=0.7, end=0.5)
    mine = ours(ctx, [unit])
    adapter = loaded("t2i_adapter", xl_nets["adapter"])
    pipe = pipeline(StableDiffusionXLAdapterPipeline, xl_base, adapter=adapter)
    reference = theirs(pipe, image=image, adapter_conditioning_scale=0.7, adapter_conditioning_factor=0.5)
    assert (mine - reference).abs().max().item() == 0.0
    plain = ours(ctx, [])
    assert (mine - plain).abs().max().item() > 1e-3  # the adapter acts
    full = ours(ctx, [t2i_adapter(handle, Image(image), weight=0.7)])
    assert not torch.equal(full, mine)  # `end` (adapter_conditioning_factor) limits its steps
    assert (full - theirs(pipe, image=image, adapter_conditioning_scale=0.7)).abs().max().item() == 0.0


def test_two_t2i_adapters_xl_equal_multiadapter_pipeline(make_ctx, xl_base, xl_nets, tmp_path):
    """Two adapter units sum their weighted features, as diffusers' MultiAdapter does."""
    from diffusers import MultiAdapter, StableDiffusionXLAdapterPipeline
    from nodegraph_control.nodes import load_t2i_adapter, t2i_adapter
    from nodegraph_control.tiny_control import build_tiny_adapter_xl

    build_tiny_adapter_xl(xl_base.unet, seed=11).save_pretrained(tmp_path / "second")
    ctx = make_ctx()
    first, second = pixels(14), pixels(15)
    units = [t2i_adapter(load_t2i_adapter(ctx, str(xl_nets["adapter"])), Image(first), weight=0.7, end=0.5),
             t2i_adapter(load_t2i_adapter(ctx, str(tmp_path / "second")), Image(second), weight=0.5, end=0.5)]
    both = ours(ctx, units)
    multi = MultiAdapter([loaded("t2i_adapter", xl_nets["adapter"]),
                          loaded("t2i_adapter", tmp_path / "second")])
    pipe = pipeline(StableDiffusionXLAdapterPipeline, xl_base, adapter=multi)
    reference = theirs(pipe, image=[first, second], adapter_conditioning_scale=[0.7, 0.5],
                       adapter_conditioning_factor=0.5)
    assert (both - reference).abs().max().item() == 0.0
    assert not torch.equal(both, ours(ctx, units[:1]))
    assert not torch.equal(both, ours(ctx, units[1:]))


@pytest.mark.parametrize("size", [64, 96], ids=["same-size", "resized"])
def test_one_channel_t2i_adapter_xl_gets_the_image_as_pil_l(make_ctx, xl_base, tmp_path, size):
    """Canny/sketch adapters read one channel: an RGB control image goes in as the pipeline gets
    `PIL.Image.convert("L")` of it (resized with Lanczos when not of the generation size)."""
    from diffusers import StableDiffusionXLAdapterPipeline
    from nodegraph_control.nodes import load_t2i_adapter, t2i_adapter
    from nodegraph_control.tiny_control import build_tiny_adapter_xl
    from PIL import Image as PILImage

    build_tiny_adapter_xl(xl_base.unet, seed=9, in_channels=1).save_pretrained(tmp_path / "grey")
    ctx = make_ctx()
    colour = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(10))
    colour = (colour * 255).round() / 255  # 8-bit values, as a PNG gives
    mine = ours(ctx, [t2i_adapter(load_t2i_adapter(ctx, str(tmp_path / "grey")), Image(colour), weight=0.9)])
    grey = PILImage.fromarray((colour[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).convert("L")
    adapter = loaded("t2i_adapter", tmp_path / "grey")
    pipe = pipeline(StableDiffusionXLAdapterPipeline, xl_base, adapter=adapter)
    assert (mine - theirs(pipe, image=grey, adapter_conditioning_scale=0.9)).abs().max().item() == 0.0
    assert (mine - ours(ctx, [])).abs().max().item() > 1e-3


@torch.no_grad()
def reference_loop(base: Any, controlnet: Any, cn_image: torch.Tensor, cn_scale: float, adapter: Any,
                   ad_image: torch.Tensor, ad_weight: float) -> torch.Tensor:
    """ControlNet + T2I-Adapter-XL on SDXL, assembled from the SDXL pipelines' own calls (no stock
    pipeline does both): the ControlNet pipeline's prompt, time ids, control image, latents and step
    arguments, the adapter pipeline's scaled, CFG-doubled features, one UNet call with both residual kinds."""
    from diffusers import StableDiffusionXLControlNetPipeline

    pipe = pipeline(StableDiffusionXLControlNetPipeline, base, controlnet=controlnet)
    positive, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt="")
    time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=positive.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    embeds = torch.cat([negative, positive])
    added = {"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": torch.cat([time_ids, time_ids])}
    image = pipe.prepare_image(cn_image, width=64, height=64, batch_size=1, num_images_per_prompt=1,
                               device="cpu", dtype=controlnet.dtype, do_classifier_free_guidance=True,
                               guess_mode=False)
    state = [torch.cat([feature * ad_weight] * 2) for feature in adapter(ad_image)]
    generator = torch.Generator().manual_seed(SEED)
    pipe.scheduler.set_timesteps(STEPS, device="cpu")
    latents = pipe.prepare_latents(1, 4, 64, 64, embeds.dtype, "cpu", generator)
    step_kwargs = pipe.prepare_extra_step_kwargs(generator, 0.0)
    for t in pipe.scheduler.timesteps:
        model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        down, mid = controlnet(model_input, t, encoder_hidden_states=embeds, controlnet_cond=image,
                               conditioning_scale=cn_scale, added_cond_kwargs=added, return_dict=False)
        noise = pipe.unet(model_input, t, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid,
                          down_intrablock_additional_residuals=[s.clone() for s in state],
                          added_cond_kwargs=added, return_dict=False)[0]
        uncond, text = noise.chunk(2)
        latents = pipe.scheduler.step(uncond + CFG * (text - uncond), t, latents, **step_kwargs,
                                      return_dict=False)[0]
    return latents


def test_sdxl_controlnet_plus_t2i_adapter_equals_reference_loop(make_ctx, xl_base, xl_nets):
    from nodegraph_control.nodes import controlnet, load_controlnet, load_t2i_adapter, t2i_adapter

    ctx = make_ctx()
    cn_image, ad_image = scene(), pixels(8)
    cn = controlnet(load_controlnet(ctx, str(xl_nets["cn-b"])), Image(cn_image), strength=0.6)
    ad = t2i_adapter(load_t2i_adapter(ctx, str(xl_nets["adapter"])), Image(ad_image), weight=0.8)
    both = ours(ctx, [cn, ad])
    reference = reference_loop(xl_base, loaded("controlnet", xl_nets["cn-b"]), cn_image, 0.6,
                               loaded("t2i_adapter", xl_nets["adapter"]), ad_image, 0.8)
    assert (both - reference).abs().max().item() == 0.0
    assert torch.equal(ours(ctx, [ad, cn]), both)  # different residual kinds: list order does not matter
    assert not torch.equal(both, ours(ctx, [cn]))  # each acts
    assert not torch.equal(both, ours(ctx, [ad]))


@pytest.mark.parametrize("name", ["tinyxl-adapter", "tinyxl-ip-adapter"])
def test_builtin_sdxl_adapters_are_rebuilt_bit_for_bit(tmp_path, name):
    """The committed tiny SDXL adapters are what their builders make (`python -m ... build`)."""
    from nodegraph_control import tiny_control, tiny_ip_adapter
    from nodegraph_diffusion.paths import BUILTIN_DIR, fingerprint_path

    if name == "tinyxl-adapter":
        tiny_control.save_builtin_xl(tmp_path)
    else:
        tiny_ip_adapter.save_builtin_xl(tmp_path)
    assert fingerprint_path(tmp_path / name) == fingerprint_path(BUILTIN_DIR / name)
    assert sum(p.stat().st_size for p in (tmp_path / name).rglob("*") if p.is_file()) < 2_000_000
