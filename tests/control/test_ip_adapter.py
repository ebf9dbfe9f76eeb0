"""IP-Adapter units in our sampler equal diffusers' pipelines with `load_ip_adapter` bit for bit (CPU fp32).

The built-in tiny IP-Adapter has random (non-zero) weights everywhere; every equality test also checks
that the adapter changes the result, so equality cannot hold by accident. The pipelines get their own
copy of the UNet (`load_ip_adapter` changes it for good); our sampler runs on the shared one and must
leave it exactly as it found it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_control.controlnet import ControlNetUnit
from nodegraph_control.ip_adapter import IPAdapterUnit, encode_reference
from nodegraph_control.ip_adapter_files import describe_ip_adapter
from nodegraph_control.tiny_ip_adapter import NAME, WEIGHT_NAME
from nodegraph_core.types import Image
from nodegraph_diffusion.conditions import Condition

from tests.control.test_control_exactness import call

BLOCKS = {"up": {"block_1": [0.0, 1.0]}}  # the tiny UNet's only cross-attention up block, 2nd layer only


@pytest.fixture(scope="module")
def reference() -> Image:
    return Image(torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(11)))


@pytest.fixture
def ip(builtin: Path, make_ctx: Any, reference: Image) -> Any:
    """`ip(scale=..., block_scales=...)`: an IP-Adapter unit on the built-in tiny adapter."""
    ctx = make_ctx()
    handle = describe_ip_adapter(builtin / NAME, None, ctx)
    embeds = encode_reference(handle, reference, ctx)

    def make(scale: float = 1.0, block_scales: dict[str, Any] | None = None) -> IPAdapterUnit:
        return IPAdapterUnit(handle, embeds, scale, block_scales)

    return make


def pil(image: Image) -> Any:
    from nodegraph_control.ip_adapter import _pil_images

    return _pil_images(image)[0]


def with_ip_adapter(pipe: Any, builtin: Path, scale: Any, folder: Path | None = None,
                    weight_name: str = WEIGHT_NAME) -> Any:
    """`pipe` with the built-in tiny IP-Adapter loaded (or the one in `folder`) at `scale`."""
    pipe.load_ip_adapter(
        str(folder or builtin / NAME),
        subfolder="",
        weight_name=weight_name,
        image_encoder_folder="image_encoder",
        local_files_only=True,
    )
    pipe.set_ip_adapter_scale(scale)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_pipeline(tiny: dict[str, Any], builtin: Path, scale: Any, folder: Path | None = None,
                weight_name: str = WEIGHT_NAME) -> Any:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    parts = {k: tiny[k] for k in ("vae", "text_encoder", "tokenizer")}
    pipe = StableDiffusionPipeline(
        **parts,
        unet=copy.deepcopy(tiny["unet"]),
        scheduler=PNDMScheduler.from_config(tiny["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    return with_ip_adapter(pipe, builtin, scale, folder, weight_name)


def processors(unet: Any) -> dict[str, Any]:
    return dict(unet.attn_processors)


def assert_restored(unet: Any, before: dict[str, Any]) -> None:
    after = processors(unet)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None


def test_ip_adapter_equals_pipeline(tiny, builtin, embeds, ip, run_units, reference):
    plain = run_units([])
    before = processors(tiny["unet"])
    ours = run_units([ip(0.7)])
    assert_restored(tiny["unet"], before)
    theirs = call(sd_pipeline(tiny, builtin, 0.7), embeds, ip_adapter_image=pil(reference))
    assert (ours - theirs).abs().max().item() == 0.0
    assert (ours - plain).abs().max().item() > 1e-2  # the adapter acts
    assert torch.equal(run_units([]), plain)  # the shared UNet is as before: a plain run is unchanged


def test_ip_adapter_block_scales_equal_pipeline(tiny, builtin, embeds, ip, run_units, reference):
    ours = run_units([ip(block_scales=BLOCKS)])
    theirs = call(sd_pipeline(tiny, builtin, BLOCKS), embeds, ip_adapter_image=pil(reference))
    assert (ours - theirs).abs().max().item() == 0.0
    full, plain = run_units([ip(1.0)]), run_units([])
    assert (ours - full).abs().max().item() > 1e-3 and (ours - plain).abs().max().item() > 1e-3


def test_ip_adapter_scale_zero_is_plain(ip, run_units):
    assert torch.equal(run_units([ip(0.0)]), run_units([]))
    assert torch.equal(run_units([ip(0.0)], cfg=1.0), run_units([], cfg=1.0))  # no CFG: no negative branch


def test_ip_adapter_with_controlnet_equals_controlnet_pipeline(
    tiny, builtin, embeds, ip, run_units, reference, load_control, handle, control_image
):
    from diffusers import PNDMScheduler, StableDiffusionControlNetPipeline

    image = control_image(1)
    parts = {k: tiny[k] for k in ("vae", "text_encoder", "tokenizer")}
    pipe = StableDiffusionControlNetPipeline(
        **parts,
        unet=copy.deepcopy(tiny["unet"]),
        controlnet=load_control("tinyworld-pose"),
        scheduler=PNDMScheduler.from_config(tiny["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    with_ip_adapter(pipe, builtin, 0.8)
    theirs = call(
        pipe, embeds, image=image, controlnet_conditioning_scale=0.9, ip_adapter_image=pil(reference)
    )
    cn = ControlNetUnit(handle("tinyworld-pose"), Image(image), 0.9)
    for units in ([cn, ip(0.8)], [ip(0.8), cn]):  # list order does not matter for these two
        assert (run_units(units) - theirs).abs().max().item() == 0.0
    assert (theirs - run_units([cn])).abs().max().item() > 1e-3  # the adapter acts next to the ControlNet


def test_ip_adapter_composes_with_attention_hooks_in_any_order(tiny, ip, run_units, make_ctx):
    from nodegraph_attention.capture import AttentionCapture

    before = processors(tiny["unet"])
    alone = run_units([ip(0.9)])
    for units in ([AttentionCapture(key="maps"), ip(0.9)], [ip(0.9), AttentionCapture(key="maps")]):
        ctx = make_ctx()
        assert torch.equal(run_units(units, ctx=ctx), alone)  # capture only reads: same image
        assert_restored(tiny["unet"], before)


def test_ip_adapter_plus_equals_pipeline_and_composes_with_attention_hooks(
    tiny, builtin, embeds, run_units, reference, make_ctx, tmp_path
):
    """A Plus adapter (a Resampler projection, with attention layers of its own) on the SD1.x UNet:
    equal to the pipeline, and attention hooks in either order neither touch nor lose its layers."""
    from nodegraph_attention.capture import AttentionCapture
    from nodegraph_control.tiny_ip_adapter import save_ip_adapter

    folder = save_ip_adapter(tmp_path / "plus", tiny["unet"], "ip-adapter-plus_tiny.safetensors", plus=True)
    ctx = make_ctx()
    handle = describe_ip_adapter(folder, None, ctx)
    assert handle.hidden_states
    plus = IPAdapterUnit(handle, encode_reference(handle, reference, ctx), 0.8)
    before, plain = processors(tiny["unet"]), run_units([])
    alone = run_units([plus])
    theirs = call(sd_pipeline(tiny, builtin, 0.8, folder, "ip-adapter-plus_tiny.safetensors"), embeds,
                  ip_adapter_image=pil(reference))
    assert (alone - theirs).abs().max().item() == 0.0
    assert (alone - plain).abs().max().item() > 1e-3
    for units in ([AttentionCapture(key="maps"), plus], [plus, AttentionCapture(key="maps")]):
        assert torch.equal(run_units(units, ctx=make_ctx()), alone)
        assert_restored(tiny["unet"], before)
    assert torch.equal(run_units([]), plain)


class _Boom(Condition):
    """A condition whose step fails, to check the IP-Adapter is removed when sampling fails."""

    def activate(self, setup: Any, ctx: Any) -> Any:
        class Active:
            def step_kwargs(self, step: Any) -> dict[str, Any]:
                raise RuntimeError("boom")

            def close(self) -> None:
                pass

        return Active()


def test_ip_adapter_removed_when_sampling_fails(tiny, ip, run_units):
    plain = run_units([])
    before = processors(tiny["unet"])
    with pytest.raises(RuntimeError, match="boom"):
        run_units([ip(1.0), _Boom()])
    assert_restored(tiny["unet"], before)
    assert torch.equal(run_units([]), plain)


def test_second_ip_adapter_unit_is_refused_and_unet_restored(tiny, ip, run_units):
    from nodegraph.errors import InputError

    before = processors(tiny["unet"])
    with pytest.raises(InputError, match="one IP-Adapter unit per sampler"):
        run_units([ip(1.0), ip(0.5)])
    assert_restored(tiny["unet"], before)


def test_bad_block_scales_are_an_input_error(tiny, ip, run_units):
    from nodegraph.errors import InputError

    before = processors(tiny["unet"])
    with pytest.raises(InputError, match="block_scales"):
        run_units([ip(block_scales={"up": {"block_1": [1.0, 1.0, 1.0]}})])  # that block has 2 layers
    assert_restored(tiny["unet"], before)


def test_encoded_reference_matches_pipeline_encoder(builtin, make_ctx, reference, tiny):
    from diffusers import StableDiffusionPipeline

    ctx = make_ctx()
    handle = describe_ip_adapter(builtin / NAME, None, ctx)
    ours = encode_reference(handle, reference, ctx)
    pipe = sd_pipeline(tiny, builtin, 1.0)
    theirs = StableDiffusionPipeline.prepare_ip_adapter_image_embeds(
        pipe, pil(reference), None, "cpu", 1, True
    )[0]
    assert torch.equal(torch.cat([ours.negative, ours.embeds]), theirs)
    assert ours.embeds.abs().max() > 0 and not handle.hidden_states
    assert ctx.resources.load_count(f"{handle.encoder_fingerprint}:image_encoder") == 1
    encode_reference(handle, reference, ctx)  # resident: not loaded again
    assert ctx.resources.load_count(f"{handle.encoder_fingerprint}:image_encoder") == 1


def test_tiny_ip_adapter_is_deterministic_and_small(builtin, tmp_path):
    from nodegraph_control.tiny_ip_adapter import save_builtin
    from nodegraph_diffusion.paths import fingerprint_path

    target = save_builtin(tmp_path)
    assert fingerprint_path(target) == fingerprint_path(builtin / NAME)
    assert sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) < 2_000_000


def test_adapter_for_another_unet_is_an_input_error_naming_it(tiny, builtin, make_ctx):
    from nodegraph_control.ip_adapter import install_ip_adapter
    from nodegraph_control.ip_adapter_files import read_adapter

    from nodegraph.errors import InputError

    ctx = make_ctx()
    handle = describe_ip_adapter(builtin / NAME, None, ctx)
    state = read_adapter(handle, ctx)
    del state["ip_adapter"]["7.to_k_ip.weight"]  # a UNet with one cross-attention layer more than it has
    before = processors(tiny["unet"])
    with pytest.raises(InputError, match="does not fit this UNet") as info:
        install_ip_adapter(tiny["unet"], state, 1.0, handle.path)
    assert handle.path in str(info.value)
    assert_restored(tiny["unet"], before)
