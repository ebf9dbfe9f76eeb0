"""Flux.1 inpainting with a plain model: graphs/flux_inpaint.yaml equals FluxInpaintPipeline, same seed.

The pipeline draws with one generator: the picture's latent sample, the noise, the masked picture's
sample (unused by a 64-channel transformer, drawn all the same); after every step it resets the kept
area to the original re-noised with `scale_noise` (sampling.renoised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from tests.diffusion.test_flux import GRAPHS, flux_pipe, png

PROMPT = "a big yellow triangle in the center, blue background"


def inputs() -> tuple[Any, Any]:
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im, \
            PILImage.open(GRAPHS / "inputs" / "scene_64_mask.png") as mask:
        return im.convert("RGB"), mask.convert("L")


@pytest.mark.parametrize(("strength", "steps"), [(0.85, 4), (1.0, 3), (0.5, 4)])
def test_flux_inpaint_graph_equals_flux_inpaint_pipeline(tmp_path: Path, strength: float, steps: int) -> None:
    from diffusers import FluxInpaintPipeline

    result = Engine().run(GRAPHS / "flux_inpaint.yaml", {"steps": steps, "seed": 5, "strength": strength},
                          RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False))
    pipe = FluxInpaintPipeline(**flux_pipe("tinyflux").components)
    pipe.set_progress_bar_config(disable=True)
    picture, mask = inputs()
    kwargs: dict[str, Any] = {"image": picture, "mask_image": mask, "strength": strength, "height": 64,
                              "width": 64, "num_inference_steps": steps, "guidance_scale": 7.0}
    packed = pipe(PROMPT, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(5)).images
    latents = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    ours = result.outputs["latents"]["out"].samples
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "flux_inpaint.png"), np.asarray(image))


def test_the_kept_area_stays_the_original(tmp_path: Path) -> None:
    """Outside the mask the result is the encoded picture itself (the last blend, no re-noise)."""
    result = Engine().run(GRAPHS / "flux_inpaint.yaml", {"steps": 3, "seed": 2},
                          RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False))
    encoded = result.outputs["encoded"]["latents"]
    ours = result.outputs["latents"]["out"].samples
    keep = encoded.noise_mask < 0.5
    assert keep.any() and (~keep).any()
    kept = keep.expand_as(ours)
    assert torch.equal(ours[kept], encoded.samples[kept])
    assert (ours[~kept] - encoded.samples[~kept]).abs().max().item() > 1e-2
