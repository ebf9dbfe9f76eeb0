"""FLUX.1-Kontext (flux_kontext.py): graphs/flux_kontext.yaml equals FluxKontextPipeline(_auto_resize=False).

Kontext has FLUX.1-dev's architecture, so builtin:tinyflux stands in for it. The pipeline encodes the
reference picture to its latent mean (no draw), appends its packed tokens to the latents' with position
ids (1, row, column), and cuts the prediction back to the output tokens; `max_area` is set to the
output's area so the pipeline keeps the asked size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from tests.diffusion.test_flux import GRAPHS, flux_pipe, png

PROMPT = "a big red circle in the center, blue background"


@pytest.mark.parametrize(("width", "height", "cfg"), [
    (64, 64, 1.0),  # the reference's size, embedded guidance only
    (80, 48, 2.0),  # another size than the reference's (64x64), true CFG with a negative
])
def test_flux_kontext_graph_equals_flux_kontext_pipeline(tmp_path: Path, width: int, height: int,
                                                         cfg: float) -> None:
    from diffusers import FluxKontextPipeline

    params = {"steps": 3, "seed": 5, "width": width, "height": height, "guidance": 3.0, "cfg": cfg,
              "negative": "blurry"}
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / "flux_kontext.yaml", params, options)
    pipe = FluxKontextPipeline(**flux_pipe("tinyflux").components)
    pipe.set_progress_bar_config(disable=True)
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        picture = im.convert("RGB")
    kwargs: dict[str, Any] = {"image": picture, "height": height, "width": width, "num_inference_steps": 3,
                              "guidance_scale": 3.0, "max_area": width * height, "_auto_resize": False}
    if cfg > 1:
        kwargs.update(negative_prompt="blurry", true_cfg_scale=cfg)
    generator = torch.Generator().manual_seed(5)
    packed = pipe(prompt=PROMPT, **kwargs, output_type="latent", generator=generator).images
    latents = pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)
    ours = result.outputs["latents"]["out"].samples
    assert ours.shape == latents.shape == (1, 16, height // 8, width // 8)
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe(prompt=PROMPT, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "flux_kontext.png"), np.asarray(image))


def test_a_reference_of_an_unpackable_size_is_an_input_error(ctx: Any) -> None:
    from nodegraph_core.types import Image
    from nodegraph_diffusion.flux_kontext import flux_kontext
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.paths import ModelRef

    from nodegraph.api import InputError

    model = load_model(ctx, ModelRef("builtin:tinyflux"))
    with pytest.raises(InputError) as info:
        flux_kontext(ctx, model.vae, Image(torch.full((1, 3, 40, 64), 0.5)))
    assert info.value.field == "image" and "multiples of 16" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(("size", "snap"), [
    ((70, 50), False),  # the pipeline's `_auto_resize=False`: sides floored to 64x48 by resizing
    ((96, 64), True),  # its default: snapped to the trained size of aspect 1.5 (1248x832)
])
def test_kontext_resize_is_the_pipelines_resize(tmp_path: Path, size: tuple[int, int], snap: bool) -> None:
    """A reference of any size, through diffusion.kontext_resize, gives FluxKontextPipeline's pixels for
    the same PNG with `_auto_resize` = `snap` (the reference it snaps is ~1 megapixel: 5184 tokens)."""
    from diffusers import FluxKontextPipeline

    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        picture = im.convert("RGB").resize(size, PILImage.Resampling.BICUBIC)
    picture.save(tmp_path / "reference.png")
    params = {"steps": 2, "seed": 3, "width": 32, "height": 32, "image": str(tmp_path / "reference.png"),
              "snap": snap}
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / "flux_kontext.yaml", params, options)
    pipe = FluxKontextPipeline(**flux_pipe("tinyflux").components)
    pipe.set_progress_bar_config(disable=True)
    kwargs: dict[str, Any] = {"image": picture, "height": 32, "width": 32, "num_inference_steps": 2,
                              "guidance_scale": 2.5, "max_area": 32 * 32, "_auto_resize": snap}
    generator = torch.Generator().manual_seed(3)
    packed = pipe(prompt=PROMPT, **kwargs, output_type="latent", generator=generator).images
    latents = pipe._unpack_latents(packed, 32, 32, pipe.vae_scale_factor)
    assert (result.outputs["latents"]["out"].samples - latents).abs().max().item() == 0.0
    expected = (1248, 832) if snap else (64, 48)
    assert tuple(result.outputs["sized"]["out"].pixels.shape[-2:]) == expected[::-1]


def test_kontext_sizes_follow_the_pipeline_table() -> None:
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
    from nodegraph_diffusion.flux_kontext import KONTEXT_SIZES, kontext_size

    assert list(KONTEXT_SIZES) == [tuple(s) for s in PREFERRED_KONTEXT_RESOLUTIONS]
    assert kontext_size(1000, 1000, True) == (1024, 1024)
    assert kontext_size(70, 50, False) == (64, 48)
