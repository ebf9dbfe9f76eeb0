"""SD3 models refuse what does not fit them: other families' prompts and LoRAs at validation (exit 2,
no outputs), non-flow-matching schedulers and 4-channel latents when the sampler runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"

SD3_PROMPT_INTO_SDXL = """\
version: 1
nodes:
  sd3:     {type: diffusion.load_model, path: "builtin:tinysd3"}
  xl:      {type: diffusion.load_model, path: "builtin:tinyxl"}
  text:    {type: diffusion.encode_text, encoder: "@sd3.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64}
  latents: {type: diffusion.sample, unet: "@xl.unet", scheduler: "@xl.scheduler", positive: "@text",
            latents: "@empty", steps: 2, cfg: 1.0}
  image:   {type: diffusion.vae_decode, vae: "@xl.vae", latents: "@latents"}
  save:    {type: core.save_image, image: "@image", path: mixed.png}
"""

SD15_LORA_ON_SD3 = """\
version: 1
nodes:
  model:   {type: diffusion.load_model, path: "builtin:tinysd3"}
  lora:    {type: diffusion.load_lora, unet: "@model.unet", text_encoder: "@model.text_encoder",
            path: "%s"}
  text:    {type: diffusion.encode_text, encoder: "@lora.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64, unet: "@model.unet"}
  latents: {type: diffusion.sample, unet: "@lora.unet", scheduler: "@model.scheduler", positive: "@text",
            latents: "@empty", steps: 2, cfg: 1.0}
  image:   {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
  save:    {type: core.save_image, image: "@image", path: lora.png}
"""


def refused(tmp_path: Path, text: str) -> Any:
    """The one validation problem of graph `text`, after checking `nodegraph run` exits 2 with no
    traceback and writes nothing."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    registry = build_registry()
    path = tmp_path / "mixed.yaml"
    path.write_text(text)
    with pytest.raises(GraphError) as info:
        load_plan(path, registry)
    (problem,) = info.value.problems
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--no-cache", "-q"],
                                obj={"registry": registry})
    assert result.exit_code == 2, result.output
    assert "mixed.yaml" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    return problem


def test_the_sd3_graphs_validate() -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.nodes.registry import build_registry

    registry = build_registry()
    load_plan(GRAPHS / "sd35.yaml", registry)
    load_plan(GRAPHS / "sd35_img2img.yaml", registry)


def test_sd3_conditioning_into_an_sdxl_unet_fails_validation(tmp_path: Path) -> None:
    problem = refused(tmp_path, SD3_PROMPT_INTO_SDXL)
    assert (problem.node, problem.field, problem.line) == ("latents", "positive", 7)
    assert "'positive' gets SD3 conditioning from node 'text'" in str(problem)
    assert "'unet' is an SDXL UNet" in str(problem)


def test_an_sd15_lora_on_sd3_fails_validation(tmp_path: Path, style_lora: Path) -> None:
    problem = refused(tmp_path, SD15_LORA_ON_SD3 % style_lora)
    assert (problem.node, problem.field) == ("lora", "path")
    assert "this LoRA is not for SD3 models" in str(problem)


def test_ddim_and_4_channel_latents_are_input_errors_on_sd3(ctx: Any) -> None:
    from nodegraph_diffusion.latent_nodes import empty_latents
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.paths import ModelRef
    from nodegraph_diffusion.sampler_nodes import sample
    from nodegraph_diffusion.schedulers import scheduler as scheduler_node
    from nodegraph_diffusion.text_nodes import encode_text

    from nodegraph.api import InputError

    model = load_model(ctx, ModelRef("builtin:tinysd3"))
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    empty = empty_latents(64, 64, 1, model.unet)
    assert tuple(empty.samples.shape) == (1, 16, 8, 8)
    with pytest.raises(InputError) as info:
        sample(ctx, model.unet, scheduler_node(model.scheduler, "ddim"), positive, empty, steps=2, cfg=1.0)
    assert info.value.field == "scheduler"
    assert "DDIMScheduler is not a flow-matching scheduler" in str(info.value)
    with pytest.raises(InputError) as info:
        sample(ctx, model.unet, model.scheduler, positive, empty_latents(64, 64, 1), steps=2, cfg=1.0)
    assert info.value.field == "latents" and "4 channels" in str(info.value)
    out = sample(ctx, model.unet, model.scheduler, positive, empty, steps=2, cfg=1.0)  # the fitting ones run
    assert out.family == "sd3" and out.samples.abs().sum() > 0
