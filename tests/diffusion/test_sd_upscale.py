"""The SD x4 upscaler as a sampler condition (sd_upscale.py): graphs/upscale.yaml equals
StableDiffusionUpscalePipeline, same seed, same input PNG, to the last bit.

The pipeline draws with one generator: first noise of the low-res picture's shape (which its DDPM
low_res_scheduler adds at `noise_level`), then the latents' noise; the UNet reads the noised picture as
3 more input channels and the level as `class_labels`; its 3-level VAE decodes 4x larger.
builtin:tinyworld-x4 is random in every weight (the picture's conv_in columns and the class embedding
included), so the picture and the level both change the result.
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
from tests.diffusion.test_sd3_validation import refused

PROMPT = "a big red circle in the center, blue background"


@pytest.fixture(scope="module")
def x4_pipe() -> Any:
    from diffusers import StableDiffusionUpscalePipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = StableDiffusionUpscalePipeline.from_pretrained(BUILTIN_DIR / "tinyworld-x4", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part)
    return pipe


def run(tmp_path: Path, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(GRAPHS / "upscale.yaml", params, options)


def scene() -> PILImage.Image:
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        return im.convert("RGB")


@pytest.mark.slow
@pytest.mark.parametrize(("negative", "cfg", "noise_level"), [
    ("", 9.0, 20),  # the pipeline's defaults
    ("a small green square", 4.0, 150),  # a negative prompt, more noise on the picture
    ("", 1.0, 0),  # no guidance: one branch; level 0
])
def test_upscale_graph_equals_upscale_pipeline(tmp_path: Path, x4_pipe: Any, negative: str, cfg: float,
                                               noise_level: int) -> None:
    result = run(tmp_path, steps=3, seed=5, negative=negative, cfg=cfg, noise_level=noise_level)
    kwargs = dict(image=scene(), num_inference_steps=3, guidance_scale=cfg, noise_level=noise_level,
                  negative_prompt=negative)
    generator = torch.Generator().manual_seed(5)
    theirs = x4_pipe(PROMPT, output_type="latent", generator=generator, **kwargs).images
    ours = result.outputs["latents"]["out"].samples
    assert ours.shape == theirs.shape == (1, 4, 64, 64)
    assert (ours - theirs).abs().max().item() == 0.0
    image = x4_pipe(PROMPT, generator=torch.Generator().manual_seed(5), **kwargs).images[0]
    assert image.size == (256, 256)
    assert np.array_equal(png(tmp_path / "upscale.png"), np.asarray(image))


@pytest.mark.slow
def test_the_picture_and_the_noise_level_act(tmp_path: Path) -> None:
    base = run(tmp_path, steps=1, seed=1).outputs["latents"]["out"].samples
    other = run(tmp_path, steps=1, seed=1, image=str(GRAPHS / "inputs" / "scene_64_mask.png"))
    level = run(tmp_path, steps=1, seed=1, noise_level=200)
    for changed in (other, level):
        assert (changed.outputs["latents"]["out"].samples - base).abs().max().item() > 1e-3


def test_an_out_of_range_noise_level_fails_validation(tmp_path: Path) -> None:
    text = (GRAPHS / "upscale.yaml").read_text().replace("inputs/", f"{GRAPHS}/inputs/")
    problem = refused(tmp_path, text.replace("default: 20, minimum: 0, maximum: 350", "default: 351"))
    assert (problem.node, problem.field) == ("low_res", "noise_level")


def test_a_plain_unet_with_the_condition_fails_validation(tmp_path: Path) -> None:
    text = (GRAPHS / "upscale.yaml").read_text().replace('default: "builtin:tinyworld-x4"',
                                                         'default: "builtin:tinyworld"')
    problem = refused(tmp_path, text.replace("inputs/", f"{GRAPHS}/inputs/"))
    assert (problem.node, problem.field) == ("latents", "conditions")
    assert "a condition for the x4 upscaler from node 'low_res'" in str(problem)


X4_WITHOUT_CONDITION = """\
version: 1
nodes:
  model:   {type: diffusion.load_model, path: "builtin:tinyworld-x4"}
  text:    {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64}
  latents: {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@text",
            latents: "@empty", steps: 2, cfg: 1.0}
  image:   {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
  save:    {type: core.save_image, image: "@image", path: up.png}
"""


def test_the_x4_unet_without_its_condition_fails_validation(tmp_path: Path) -> None:
    problem = refused(tmp_path, X4_WITHOUT_CONDITION)
    assert (problem.node, problem.field) == ("latents", "conditions")
    assert "reads 3 channels besides its latents" in str(problem) and "diffusion.sd_upscale" in str(problem)


@pytest.mark.slow
def test_the_graphs_run_through_the_cli(tmp_path: Path) -> None:
    """Both new graphs as a user runs them: exit 0, the PNG written (the upscale 4x the input's size)."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    for graph, size in (("instruct_edit", 64), ("upscale", 256)):
        result = CliRunner().invoke(app, ["run", str(GRAPHS / f"{graph}.yaml"), "--set", "steps=2", "--out",
                                          str(tmp_path), "--no-cache", "-q"])
        assert result.exit_code == 0, result.output
        assert png(tmp_path / f"{graph}.png").shape == (size, size, 3)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["instruct_edit", "upscale"])
def test_a_k_sampler_with_these_conditions_is_an_input_error(tmp_path: Path, graph: str) -> None:
    """The sigma-space loop takes no guidance strategy, no pre-noise draws and no wide UNets: exit 2,
    no traceback, no PNG (rather than a result that is not the pipeline's)."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    text = (GRAPHS / f"{graph}.yaml").read_text().replace("inputs/", f"{GRAPHS}/inputs/")
    text = text.replace('scheduler: "@model.scheduler"', 'scheduler: "@ks"')
    text += '  ks:       {type: diffusion.k_sampler, model_scheduler: "@model.scheduler"}\n'
    (tmp_path / "g.yaml").write_text(text)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "g.yaml"), "--set", "steps=1", "--out",
                                      str(tmp_path / "out"), "--no-cache", "-q"])
    assert result.exit_code == 2, result.output
    assert "node 'latents'" in result.output and "use a diffusers scheduler" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / f"{graph}.png").exists()
