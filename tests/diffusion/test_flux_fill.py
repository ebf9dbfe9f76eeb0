"""FLUX.1-Fill (flux_fill.py): graphs/flux_fill.yaml and flux_outpaint.yaml equal FluxFillPipeline, same seed.

The pipeline draws with one generator: the picture's latent sample, the noise, the masked picture's
sample; every step the transformer reads the packed latents concatenated with the packed masked-picture
latents and the packed folded mask (384 channels); no blending. builtin:tinyflux-fill is random in every
weight, its masked-picture and mask input columns included, so dropping either input changes the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.paths import BUILTIN_DIR
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from tests.diffusion.test_flux import GRAPHS, png
from tests.diffusion.test_flux_inpaint import inputs
from tests.diffusion.test_sd3_validation import refused

FILL_PROMPT = "a big yellow triangle in the center, blue background"
OUTPAINT_PROMPT = "a big red circle in the center, blue background"


@pytest.fixture(scope="module")
def fill_pipe() -> Any:
    from diffusers import FluxFillPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = FluxFillPipeline.from_pretrained(BUILTIN_DIR / "tinyflux-fill", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    return pipe


def run(graph: str, tmp_path: Path, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(GRAPHS / graph, params, options)


def compare(pipe: Any, result: Any, png_path: Path, prompt: str, seed: int, **kwargs: Any) -> None:
    """The graph's latents and PNG against the pipeline's, to the last bit."""
    generator = torch.Generator().manual_seed(seed)
    packed = pipe(prompt, **kwargs, output_type="latent", generator=generator).images
    height, width = kwargs["height"], kwargs["width"]
    latents = pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)
    ours = result.outputs["latents"]["out"].samples
    assert ours.shape == latents.shape
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe(prompt, **kwargs, generator=torch.Generator().manual_seed(seed)).images[0]
    assert np.array_equal(png(png_path), np.asarray(image))


@pytest.mark.parametrize(("strength", "steps", "guidance"), [(1.0, 3, 30.0), (0.6, 4, 4.0)])
def test_flux_fill_graph_equals_flux_fill_pipeline(tmp_path: Path, fill_pipe: Any, strength: float,
                                                   steps: int, guidance: float) -> None:
    result = run("flux_fill.yaml", tmp_path, steps=steps, seed=5, strength=strength, guidance=guidance)
    picture, mask = inputs()
    compare(fill_pipe, result, tmp_path / "flux_fill.png", FILL_PROMPT, 5, image=picture, mask_image=mask,
            strength=strength, height=64, width=64, num_inference_steps=steps, guidance_scale=guidance)


def test_flux_outpaint_graph_equals_flux_fill_pipeline(tmp_path: Path, fill_pipe: Any) -> None:
    """The padded picture (mid-grey sides) and feathered mask of core.pad_for_outpaint, given to the
    pipeline as PIL images: at strength 1 the picture's latents only set the draw order (the noise
    replaces them), and the mask is thresholded, so 8-bit rounding of grey and band changes nothing."""
    result = run("flux_outpaint.yaml", tmp_path, steps=3, seed=4, left=16, right=0, top=16, bottom=16)
    padded = result.outputs["padded"]
    pixels = padded["image"].pixels[0].permute(1, 2, 0).numpy()
    mask = padded["mask"].pixels[0, 0].numpy()
    assert pixels.shape == (96, 80, 3) and 0.0 < float(mask[16:80, 16:].mean()) < 0.5  # a band is repainted
    picture = PILImage.fromarray(np.round(pixels * 255).astype(np.uint8))
    area = PILImage.fromarray(np.where(mask >= 0.5, 255, 0).astype(np.uint8), mode="L")
    compare(fill_pipe, result, tmp_path / "flux_outpaint.png", OUTPAINT_PROMPT, 4, image=picture,
            mask_image=area, height=96, width=80, num_inference_steps=3, guidance_scale=30.0)


def test_fold_mask_is_the_pipelines() -> None:
    """The 8x8 pixels under each latent cell as 64 channels, in prepare_mask_latents' order."""
    from nodegraph_diffusion.flux_fill import fold_mask

    mask = (torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    folded = fold_mask(mask)
    assert folded.shape == (2, 64, 4, 6)
    for cell_y, cell_x, dy, dx in ((0, 0, 0, 0), (3, 5, 7, 2), (1, 4, 2, 7)):
        pixel = mask[:, 0, cell_y * 8 + dy, cell_x * 8 + dx]
        assert torch.equal(folded[:, dy * 8 + dx, cell_y, cell_x], pixel)


FILL_WITHOUT_CONDITION = """\
version: 1
nodes:
  model:   {type: diffusion.load_model, path: "builtin:tinyflux-fill"}
  text:    {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64, unet: "@model.unet"}
  latents: {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@text",
            latents: "@empty", steps: 2, cfg: 1.0}
  image:   {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
  save:    {type: core.save_image, image: "@image", path: fill.png}
"""


def test_a_fill_model_without_its_condition_fails_validation(tmp_path: Path) -> None:
    problem = refused(tmp_path, FILL_WITHOUT_CONDITION)
    assert (problem.node, problem.field, problem.line) == ("latents", "conditions", 6)
    assert "'unet' from node 'model' is a Flux.1 Fill model" in str(problem)
    assert "no Fill condition" in str(problem)


def test_a_fill_condition_on_a_plain_flux_model_fails_validation(tmp_path: Path) -> None:
    text = (GRAPHS / "flux_fill.yaml").read_text().replace('default: "builtin:tinyflux-fill"',
                                                           'default: "builtin:tinyflux"')
    text = text.replace("inputs/", f"{GRAPHS}/inputs/")
    problem = refused(tmp_path, text)
    assert (problem.node, problem.field) == ("latents", "conditions")
    assert "gets a Fill condition from node 'fill'" in str(problem)
    assert "reads only its latents" in str(problem)


def test_a_mask_of_another_size_is_an_input_error_on_mask(tmp_path: Path) -> None:
    """Sizes are known once the files are read: the Fill node refuses it, exit 2, before sampling."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    PILImage.new("L", (32, 32), 255).save(tmp_path / "small_mask.png")
    result = CliRunner().invoke(app, ["run", str(GRAPHS / "flux_fill.yaml"), "--set",
                                      f"mask={tmp_path / 'small_mask.png'}", "--set", "steps=1", "--out",
                                      str(tmp_path / "out"), "--no-cache", "-q"])
    assert result.exit_code == 2, result.output
    assert "node 'fill'" in result.output and "field 'mask'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "flux_fill.png").exists()


def test_the_denoiser_checks_the_extra_channels_without_validation() -> None:
    """Library use past validation: the Flux denoiser refuses a missing or unwanted Fill input."""
    from nodegraph_diffusion.flux_fill import CONCAT_KWARG, with_concat

    from nodegraph.api import InputError

    latents = torch.zeros(1, 16, 4, 4)
    with pytest.raises(InputError) as info:
        with_concat(latents, {}, 80)
    assert info.value.field == "conditions" and "diffusion.flux_fill" in str(info.value)
    with pytest.raises(InputError) as info:
        with_concat(latents, {CONCAT_KWARG: torch.ones(1, 80, 4, 4)}, 0)
    assert "reads only its latents" in str(info.value)
    joined = with_concat(latents, {CONCAT_KWARG: torch.ones(1, 80, 4, 4)}, 80)
    assert joined.shape == (1, 96, 4, 4) and torch.equal(joined[:, 16:], torch.ones(1, 80, 4, 4))
