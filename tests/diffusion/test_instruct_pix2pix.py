"""InstructPix2Pix as a sampler condition (instruct_pix2pix.py): graphs/instruct_edit.yaml equals
StableDiffusionInstructPix2PixPipeline, same seed, same input PNG, to the last bit.

The pipeline encodes the picture to the VAE's latent mode (unscaled), draws only the initial noise, and
guides with three branches in one UNet call ([text+image, image, neither]: states [pos, neg, neg],
picture latents [img, img, 0]). builtin:tinyworld-ip2p is the model training/train_ip2p.py trained
(the picture's input columns of conv_in are far from zero), so dropping or changing the picture
changes the result.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.paths import BUILTIN_DIR
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError
from tests.diffusion.test_flux import GRAPHS, png
from tests.diffusion.test_sd3_validation import refused

INSTRUCTION = "turn the square into a circle"  # the graph's default


@pytest.fixture(scope="module")
def ip2p_pipe() -> Any:
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        BUILTIN_DIR / "tinyworld-ip2p", local_files_only=True, safety_checker=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part)
    return pipe


def run(tmp_path: Path, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(GRAPHS / "instruct_edit.yaml", params, options)


def scene() -> PILImage.Image:
    with PILImage.open(GRAPHS / "inputs" / "world_square_64.png") as im:  # the graph's default picture
        return im.convert("RGB")


@pytest.mark.slow
@pytest.mark.parametrize(("negative", "cfg", "image_guidance"), [
    ("", 7.5, 1.5),  # the model card's scales, empty negative
    ("a small green square", 5.0, 2.0),  # a negative prompt: the image-only and neither branches read it
    ("", 7.5, 0.5),  # image_guidance < 1: the pipeline does not guide at all (one branch)
])
def test_instruct_edit_graph_equals_instruct_pix2pix_pipeline(tmp_path: Path, ip2p_pipe: Any, negative: str,
                                                             cfg: float, image_guidance: float) -> None:
    result = run(tmp_path, steps=4, seed=5, negative=negative, cfg=cfg, image_guidance=image_guidance)
    kwargs = dict(image=scene(), num_inference_steps=4, guidance_scale=cfg,
                  image_guidance_scale=image_guidance, negative_prompt=negative)
    theirs = ip2p_pipe(INSTRUCTION, output_type="latent", generator=torch.Generator().manual_seed(5),
                       **kwargs).images
    ours = result.outputs["latents"]["out"].samples
    assert ours.shape == theirs.shape == (1, 4, 8, 8)
    assert (ours - theirs).abs().max().item() == 0.0
    image = ip2p_pipe(INSTRUCTION, generator=torch.Generator().manual_seed(5), **kwargs).images[0]
    assert np.array_equal(png(tmp_path / "instruct_edit.png"), np.asarray(image))


@pytest.mark.slow
def test_the_picture_and_its_scale_act(tmp_path: Path) -> None:
    """Another picture, or another image scale, changes the edit: the condition is read, not ignored."""
    base = run(tmp_path, steps=2, seed=1).outputs["latents"]["out"].samples
    other = run(tmp_path, steps=2, seed=1, image=str(GRAPHS / "inputs" / "scene_64_mask.png"))
    scaled = run(tmp_path, steps=2, seed=1, image_guidance=3.0)
    for changed in (other, scaled):
        assert (changed.outputs["latents"]["out"].samples - base).abs().max().item() > 1e-3


def test_a_plain_unet_with_the_condition_fails_validation(tmp_path: Path) -> None:
    text = (GRAPHS / "instruct_edit.yaml").read_text().replace('default: "builtin:tinyworld-ip2p"',
                                                              'default: "builtin:tinyworld"')
    problem = refused(tmp_path, text.replace("inputs/", f"{GRAPHS}/inputs/"))
    assert (problem.node, problem.field) == ("latents", "conditions")
    assert "a condition for an InstructPix2Pix model from node 'edit'" in str(problem)
    assert "reads only its latents" in str(problem)


IP2P_WITHOUT_CONDITION = """\
version: 1
nodes:
  model:   {type: diffusion.load_model, path: "builtin:tinyworld-ip2p"}
  text:    {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "make the circle blue"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64}
  latents: {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@text",
            latents: "@empty", steps: 2, cfg: 1.0}
  image:   {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
  save:    {type: core.save_image, image: "@image", path: edit.png}
"""


def test_an_ip2p_unet_without_the_condition_fails_validation(tmp_path: Path) -> None:
    problem = refused(tmp_path, IP2P_WITHOUT_CONDITION)
    assert (problem.node, problem.field, problem.line) == ("latents", "conditions", 6)
    assert "reads 4 channels besides its latents" in str(problem)
    assert "diffusion.instruct_pix2pix" in str(problem)


def _setup(in_channels: int, guidance: Any) -> Any:
    from nodegraph_diffusion.conditions import SamplingSetup
    from nodegraph_diffusion.families import family_named

    unet = SimpleNamespace(config=SimpleNamespace(in_channels=in_channels))
    return SamplingSetup(unet=unet, device="cpu", dtype=torch.float32, batch_size=1, do_cfg=True, height=64,
                         width=64, timesteps=None, num_steps=1, first_step=0, prompt_embeds=None,
                         family=family_named("sd1"), guidance=guidance)


def test_past_validation_the_sampler_refuses_misfits_on_conditions() -> None:
    """Library use without validation: a 4-channel UNet given the condition, an 8-channel one without
    it, a loop without guidance hooks (the k-sampler's): InputErrors on 'conditions'."""
    from nodegraph_diffusion.families.base import ModelFamily
    from nodegraph_diffusion.instruct_pix2pix import InstructPix2PixCondition

    condition = InstructPix2PixCondition(torch.zeros(1, 4, 8, 8), 1.5)
    guidance = condition.guidance(7.5, True)
    for setup, words in ((_setup(4, guidance), "reads none besides its latents"),
                         (_setup(8, None), "not a k-sampler")):
        with pytest.raises(InputError) as info:
            condition.activate(setup, None)
        assert info.value.field == "conditions" and words in str(info.value)
    assert condition.activate(_setup(8, guidance), None).image.shape == (3, 4, 8, 8)
    model = SimpleNamespace(config=SimpleNamespace(in_channels=8))
    with pytest.raises(InputError) as info:  # the denoiser itself: 8 inputs, no picture given
        ModelFamily().denoise(model, torch.zeros(2, 4, 8, 8), torch.tensor(1), torch.zeros(2, 77, 32), {})
    assert info.value.field == "conditions" and "diffusion.instruct_pix2pix" in str(info.value)


def test_three_branch_guidance_is_the_pipelines_formula() -> None:
    from nodegraph_diffusion.instruct_pix2pix import ImageTextGuidance

    pred = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    text, image, uncond = pred.chunk(3)
    want = uncond + 7.5 * (text - image) + 1.5 * (image - uncond)
    assert torch.equal(ImageTextGuidance(7.5, 1.5, True).combine(pred), want)
    assert ImageTextGuidance(7.5, 0.5, False).branches == 1


def test_two_branch_conditions_cannot_join_three_branch_guidance() -> None:
    """A ControlNet or adapter batches for CFG's [uncond, cond]: refused on 'conditions' before the UNet
    runs, not a shape error inside it; with the guidance off (one branch) they may join."""
    from nodegraph_diffusion.guidance import pick_guidance
    from nodegraph_diffusion.instruct_pix2pix import InstructPix2PixCondition

    class TwoBranchUnit:  # stands for a ControlNet unit: no guidance hook, not guidance-neutral
        pass

    condition = InstructPix2PixCondition(torch.zeros(1, 4, 8, 8), 1.5)
    with pytest.raises(InputError) as info:
        pick_guidance([condition, TwoBranchUnit()], 7.5, True)
    assert info.value.field == "conditions" and "TwoBranchUnit" in str(info.value)
    assert pick_guidance([condition, TwoBranchUnit()], 7.5, False).branches == 1
    assert pick_guidance([condition], 7.5, True).branches == 3
