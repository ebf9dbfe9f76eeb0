"""IP-Adapter (plain and Plus) on SDXL equals StableDiffusionXLPipeline + `load_ip_adapter` bit for bit.

The adapter files are written by the test in the original IP-Adapter layout (as h94's `sdxl_models/`:
the adapter file and `image_encoder/` beside it) for the tiny SDXL UNet, with an image encoder of
other widths than the SD1.x tiny one. Every weight is random and non-zero; each test checks that the
adapter acts, and that the shared UNet is as before after the run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_control.tiny_ip_adapter import XL_VISION_CONFIG
from nodegraph_core.types import Image

from tests.control.sdxl_helpers import loaded, ours, pipeline, pixels, scene, theirs
from tests.control.test_ip_adapter import pil

WEIGHT = "ip-adapter_tinyxl.safetensors"
STYLE = {"up": {"block_0": [0.0, 1.0]}}  # the tiny SDXL's cross-attention up block (2 layers): the 2nd


def write_adapter(folder: Path, unet: Any, plus: bool) -> Path:
    from nodegraph_control.tiny_ip_adapter import save_ip_adapter

    return save_ip_adapter(folder, unet, WEIGHT, seed=505, plus=plus, vision=XL_VISION_CONFIG)


def their_pipe(base: Any, folder: Path, scale: Any, controlnet: Any = None) -> Any:
    """The SDXL pipeline (with a ControlNet if given) on its own copy of the UNet, adapter loaded."""
    from diffusers import StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline

    parts = {"controlnet": controlnet} if controlnet is not None else {}
    cls = StableDiffusionXLControlNetPipeline if controlnet is not None else StableDiffusionXLPipeline
    # its own copy of the UNet: load_ip_adapter changes it for good
    pipe = pipeline(cls, base, unet=copy.deepcopy(base.unet), **parts)
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name=WEIGHT, image_encoder_folder="image_encoder",
                         local_files_only=True)
    pipe.set_ip_adapter_scale(scale)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unit(ctx: Any, folder: Path, reference: Image, scale: float) -> Any:
    from nodegraph_control.nodes import encode_ip_image, ip_adapter, load_ip_adapter

    handle = load_ip_adapter(ctx, str(folder))
    return ip_adapter(handle, encode_ip_image(ctx, handle, reference), scale=scale)


@pytest.mark.parametrize("plus", [False, True], ids=["plain", "plus"])
def test_sdxl_ip_adapter_equals_pipeline(make_ctx, xl_base, tmp_path, plus):
    ctx = make_ctx()
    folder = write_adapter(tmp_path / "ip", xl_base.unet, plus)
    reference = Image(torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(11)))
    ip = unit(ctx, folder, reference, 0.7)
    assert ip.model.hidden_states is plus  # Plus reads the penultimate hidden states
    plain = ours(ctx, [])
    mine = ours(ctx, [ip])
    reference_latents = theirs(their_pipe(xl_base, folder, 0.7), ip_adapter_image=pil(reference))
    assert (mine - reference_latents).abs().max().item() == 0.0
    assert (mine - plain).abs().max().item() > 1e-3  # the adapter acts
    assert torch.equal(ours(ctx, []), plain)  # and is gone from the shared UNet after the run
    assert not torch.equal(ours(ctx, [unit(ctx, folder, reference, 0.3)]), mine)  # the scale reaches it


def test_sdxl_ip_adapter_block_scales_equal_pipeline(make_ctx, xl_base, tmp_path):
    """Per-block scales (InstantStyle's "style only" on SDXL: one up block's layers) as
    `set_ip_adapter_scale` takes them."""
    from nodegraph_control.nodes import encode_ip_image, ip_adapter, load_ip_adapter

    ctx = make_ctx()
    folder = write_adapter(tmp_path / "ip", xl_base.unet, plus=False)
    reference = Image(pixels(13))
    handle = load_ip_adapter(ctx, str(folder))
    embeds = encode_ip_image(ctx, handle, reference)
    mine = ours(ctx, [ip_adapter(handle, embeds, block_scales=STYLE)])
    pipe = their_pipe(xl_base, folder, STYLE)
    assert (mine - theirs(pipe, ip_adapter_image=pil(reference))).abs().max().item() == 0.0
    full = ours(ctx, [ip_adapter(handle, embeds, scale=1.0)])
    assert (mine - full).abs().max().item() > 1e-3 and (mine - ours(ctx, [])).abs().max().item() > 1e-3


def test_sdxl_ip_adapter_with_controlnet_equals_controlnet_pipeline(make_ctx, xl_base, xl_nets, tmp_path):
    from nodegraph_control.nodes import controlnet, load_controlnet

    ctx = make_ctx()
    folder = write_adapter(tmp_path / "ip", xl_base.unet, plus=True)
    reference = Image(pixels(12))
    # a weak ControlNet: the tiny random one saturates the tiny UNet (at 0.5 the adapter moves it by 3e-4)
    cn = controlnet(load_controlnet(ctx, str(xl_nets["cn-a"])), Image(scene()), strength=0.05)
    mine = ours(ctx, [cn, unit(ctx, folder, reference, 0.8)])
    pipe = their_pipe(xl_base, folder, 0.8, controlnet=loaded("controlnet", xl_nets["cn-a"]))
    reference_latents = theirs(pipe, image=scene(), controlnet_conditioning_scale=0.05,
                               ip_adapter_image=pil(reference))
    assert (mine - reference_latents).abs().max().item() == 0.0
    assert (mine - ours(ctx, [cn])).abs().max().item() > 1e-3  # the adapter acts next to the ControlNet
