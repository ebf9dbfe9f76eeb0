"""img2img and inpaint graphs equal diffusers' pipelines end to end from the same input PNG and seed.

The pipelines use one generator: the encoded image's latent sample, then the noise, then (inpaint) the
masked image's sample, then the scheduler's draws. The graph's VAE-encode nodes record their draws and
the sampler replays them around its noise, so the same seed gives the same tensors, to the last bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodegraph import Engine
from tests.diffusion.test_graphs_diffusion import GRAPHS, options, pipe_with, png

FAST = {"steps": 5}


def _open(name: str, mode: str) -> PILImage.Image:
    with PILImage.open(GRAPHS / "inputs" / name) as im:
        return im.convert(mode)


def _pipe(cls, tiny_dir: Path, scheduler: str):
    """The pipeline with its weights copied off the file's memory map, like our loader (see conftest)."""
    from nodegraph_diffusion.loading import own_storage

    pipe = pipe_with(cls, tiny_dir, scheduler)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part)
    return pipe


def _prompt(graph: str) -> str:
    import yaml

    return yaml.safe_load((GRAPHS / f"{graph}.yaml").read_text())["params"]["prompt"]["default"]


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_2m"])
def test_img2img_graph_equals_pipeline_from_pixels(tmp_path: Path, tiny_dir: Path, scheduler: str) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    params = {**FAST, "seed": 5, "scheduler": scheduler}
    result = Engine().run(GRAPHS / "img2img.yaml", params, options(tmp_path))
    pipe = _pipe(StableDiffusionImg2ImgPipeline, tiny_dir, scheduler)
    kwargs = dict(negative_prompt="", image=_open("scene_64.png", "RGB"), strength=0.6, num_inference_steps=5,
                  guidance_scale=3.0)
    theirs = pipe(_prompt("img2img"), output_type="latent", generator=torch.Generator().manual_seed(5),
                  **kwargs).images
    assert (result.outputs["latents"]["out"].samples - theirs).abs().max().item() == 0.0
    image = pipe(_prompt("img2img"), generator=torch.Generator().manual_seed(5), **kwargs).images[0]
    assert np.array_equal(png(tmp_path / "img2img.png"), np.asarray(image))


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])
def test_inpaint_graph_equals_pipeline_from_pixels(tmp_path: Path, tiny_dir: Path, scheduler: str) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    params = {**FAST, "seed": 6, "scheduler": scheduler}
    result = Engine().run(GRAPHS / "inpaint.yaml", params, options(tmp_path))
    pipe = _pipe(StableDiffusionInpaintPipeline, tiny_dir, scheduler)
    kwargs = dict(negative_prompt="", image=_open("scene_64.png", "RGB"),
                  mask_image=_open("scene_64_mask.png", "L"), strength=1.0, height=64, width=64,
                  num_inference_steps=5, guidance_scale=3.0)
    theirs = pipe(_prompt("inpaint"), output_type="latent", generator=torch.Generator().manual_seed(6),
                  **kwargs).images
    assert (result.outputs["latents"]["out"].samples - theirs).abs().max().item() == 0.0
    image = pipe(_prompt("inpaint"), generator=torch.Generator().manual_seed(6), **kwargs).images[0]
    assert np.array_equal(png(tmp_path / "inpaint.png"), np.asarray(image))


def test_noise_is_not_the_encoders_draw(tmp_path: Path) -> None:
    """Same seed for encoder and sampler: the sampler's noise follows the encoder's draw, never repeats it."""
    from nodegraph_diffusion.sampling import draw_noise, make_generator

    result = Engine().run(GRAPHS / "img2img.yaml", {**FAST, "seed": 9}, options(tmp_path))
    encoded = result.outputs["encoded"]["out"]
    assert encoded.drawn is not None and encoded.drawn.seed == 9
    assert encoded.drawn.before_noise == (tuple(encoded.samples.shape),)
    generator = make_generator(9)
    first, second = draw_noise(encoded.samples.shape, generator), draw_noise(encoded.samples.shape, generator)
    assert not torch.equal(first, second)
