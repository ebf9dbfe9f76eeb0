"""The shipped diffusion graphs run offline on the tiny model and match diffusers' pipelines exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.types import SchedulerSpec
from PIL import Image as PILImage

from nodegraph import Engine
from tests.run_helpers import cpu_options as options
from tests.run_helpers import png_pixels as png

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
FAST = {"steps": 5}



def pipe_with(cls, tiny_dir: Path, scheduler_name: str):
    pipe = cls.from_pretrained(tiny_dir, local_files_only=True, safety_checker=None,
                               requires_safety_checker=False)
    spec = SchedulerSpec(scheduler_name, tuple(sorted(dict(pipe.scheduler.config).items())))
    pipe.scheduler = make_scheduler(spec)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_txt2img_graph_png_equals_pipeline_png(tmp_path, tiny_dir):
    from diffusers import StableDiffusionPipeline

    Engine().run(GRAPHS / "txt2img.yaml", {**FAST, "seed": 3}, options(tmp_path))
    ours = png(tmp_path / "txt2img.png")
    pipe = pipe_with(StableDiffusionPipeline, tiny_dir, "dpmpp_2m")
    theirs = pipe("a big red circle in the center, blue background", negative_prompt="", height=64, width=64,
                  num_inference_steps=5, guidance_scale=3.0,
                  generator=torch.Generator().manual_seed(3)).images[0]
    assert ours.shape == (64, 64, 3)
    assert np.array_equal(ours, np.asarray(theirs))


def test_txt2img_graph_seed_changes_and_reproduces(tmp_path):
    Engine().run(GRAPHS / "txt2img.yaml", {**FAST, "seed": 1}, options(tmp_path / "a"))
    Engine().run(GRAPHS / "txt2img.yaml", {**FAST, "seed": 2}, options(tmp_path / "b"))
    Engine().run(GRAPHS / "txt2img.yaml", {**FAST, "seed": 1}, options(tmp_path / "c"))
    a, b, c = (png(tmp_path / d / "txt2img.png") for d in "abc")
    assert not np.array_equal(a, b)
    assert np.array_equal(a, c)


def test_txt2img_graph_batch_equals_num_images_per_prompt(tmp_path, tiny_dir):
    from diffusers import StableDiffusionPipeline

    result = Engine().run(GRAPHS / "txt2img.yaml", {**FAST, "seed": 4, "batch": 2, "scheduler": "euler_a"},
                          options(tmp_path))
    pipe = pipe_with(StableDiffusionPipeline, tiny_dir, "euler_a")
    theirs = pipe("a big red circle in the center, blue background", negative_prompt="", height=64, width=64,
                  num_inference_steps=5, guidance_scale=3.0, num_images_per_prompt=2, output_type="latent",
                  generator=torch.Generator().manual_seed(4)).images
    assert torch.equal(result.outputs["latents"]["out"].samples, theirs)


def test_img2img_graph_equals_pipeline(tmp_path, tiny_dir):
    from diffusers import StableDiffusionImg2ImgPipeline

    result = Engine().run(GRAPHS / "img2img.yaml", {**FAST, "seed": 5}, options(tmp_path))
    encoded = result.outputs["encoded"]["out"].samples
    pipe = pipe_with(StableDiffusionImg2ImgPipeline, tiny_dir, "euler_a")
    # encoded latents as `image`: the pipeline then draws only the noise; our sampler draws it after the
    # encoder's draw (the pipeline's order from pixels, test_pixels_exactness.py), so skip that draw
    generator = torch.Generator().manual_seed(5)
    torch.randn(encoded.shape, generator=generator)
    theirs = pipe("a big red square in the center, blue background", negative_prompt="", image=encoded,
                  strength=0.6,
                  num_inference_steps=5, guidance_scale=3.0, output_type="latent", generator=generator).images
    assert torch.equal(result.outputs["latents"]["out"].samples, theirs)
    assert png(tmp_path / "img2img.png").shape == (64, 64, 3)


def test_inpaint_graph_keeps_unmasked_latents_and_matches_pipeline(tmp_path, tiny_dir):
    from diffusers import StableDiffusionInpaintPipeline

    result = Engine().run(GRAPHS / "inpaint.yaml", {**FAST, "seed": 6}, options(tmp_path))
    source = result.outputs["encoded"]["latents"]
    out = result.outputs["latents"]["out"].samples
    keep = (source.noise_mask == 0).expand_as(out)
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.equal(out[keep], source.samples[keep])
    with PILImage.open(GRAPHS / "inputs" / "scene_64_mask.png") as im:
        mask = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)[None, None]
    pipe = pipe_with(StableDiffusionInpaintPipeline, tiny_dir, "ddim")
    generator = torch.Generator().manual_seed(6)
    torch.randn(source.samples.shape, generator=generator)  # the encoder's draw (see the img2img test)
    theirs = pipe("a big yellow triangle in the center, blue background", negative_prompt="",
                  image=source.samples, mask_image=mask,
                  masked_image_latents=source.samples, strength=1.0, height=64, width=64,
                  num_inference_steps=5, guidance_scale=3.0, output_type="latent",
                  generator=generator).images
    assert torch.equal(out, theirs)


def test_hires_fix_graph_writes_both_sizes(tmp_path):
    Engine().run(GRAPHS / "hires_fix.yaml", {**FAST, "hires_steps": 4}, options(tmp_path))
    assert png(tmp_path / "hires_base.png").shape == (64, 64, 3)
    assert png(tmp_path / "hires_fix.png").shape == (128, 128, 3)


@pytest.mark.parametrize("graph", ["txt2img", "img2img", "inpaint", "hires_fix"])
def test_graphs_validate(graph):
    Engine().load(GRAPHS / f"{graph}.yaml")
