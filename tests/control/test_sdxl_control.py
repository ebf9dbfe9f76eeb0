"""Control units on SDXL equal diffusers' SDXL pipelines bit for bit (CPU fp32, builtin:tinyxl).

Several ControlNets (StableDiffusionXLControlNetPipeline with a list of nets), a T2I-Adapter-XL
(StableDiffusionXLAdapterPipeline) and ControlNet + T2I-Adapter together (no pipeline does both: a
loop assembled from the SDXL pipeline's own calls). The control models are random and non-zero
(a fresh ControlNet is an exact no-op), and every test checks that each unit changes the result.
"""

from __future__ import annotations

import torch
from nodegraph_core.types import Image

from tests.control.sdxl_helpers import loaded, ours, pipeline, pixels, scene, theirs


def test_several_sdxl_controlnets_equal_multicontrolnet_pipeline(make_ctx, xl_base, xl_nets):
    from diffusers import StableDiffusionXLControlNetPipeline
    from nodegraph_control.nodes import controlnet, load_controlnet

    ctx = make_ctx()
    first, second = pixels(1), scene()
    units = [controlnet(load_controlnet(ctx, str(xl_nets["cn-a"])), Image(first), strength=0.9, start=0.0, end=0.7),
             controlnet(load_controlnet(ctx, str(xl_nets["cn-b"])), Image(second), strength=1.3, start=0.3, end=1.0)]
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
    pipe = pipeline(StableDiffusionXLAdapterPipeline, xl_base, adapter=loaded("t2i_adapter", xl_nets["adapter"]))
    reference = theirs(pipe, image=image, adapter_conditioning_scale=0.7, adapter_conditioning_factor=0.5)
    assert (mine - reference).abs().max().item() == 0.0
    plain = ours(ctx, [])
    assert (mine - plain).abs().max().item() > 1e-3  # the adapter acts
    full = ours(ctx, [t2i_adapter(handle, Image(image), weight=0.7)])
    assert not torch.equal(full, mine)  # `end` (adapter_conditioning_factor) limits its steps
    assert (full - theirs(pipe, image=image, adapter_conditioning_scale=0.7)).abs().max().item() == 0.0
