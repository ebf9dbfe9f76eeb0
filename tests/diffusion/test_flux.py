"""Flux.1 (families/flux.py): graphs/flux.yaml equals FluxPipeline on the same seed, to the last bit.

The built-in tiny Flux models (tiny_flux.py) are random; dev has `guidance_embeds`, schnell not.
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

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"


def flux_pipe(name: str) -> Any:
    from diffusers import FluxPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = FluxPipeline.from_pretrained(BUILTIN_DIR / name, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    return pipe


def run_graph(tmp_path: Path, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(GRAPHS / "flux.yaml", params, options)


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize(("model", "guidance", "cfg", "batch"), [
    ("tinyflux", 4.0, 1.0, 1),  # dev: embedded guidance, one call per step
    ("tinyflux", 2.0, 2.5, 1),  # dev with true CFG: a negative, two unbatched calls per step
    ("tinyflux", 3.0, 2.0, 2),  # two images per prompt, true CFG
    ("tinyflux-schnell", 3.5, 1.0, 1),  # schnell: no guidance input, fixed shift
])
def test_flux_graph_equals_flux_pipeline(tmp_path: Path, model: str, guidance: float, cfg: float,
                                         batch: int) -> None:
    params = {"model": f"builtin:{model}", "steps": 3, "seed": 3, "guidance": guidance, "cfg": cfg,
              "negative": "blurry", "batch": batch}
    result = run_graph(tmp_path, **params)
    pipe = flux_pipe(model)
    kwargs: dict[str, Any] = {"height": 64, "width": 64, "num_inference_steps": 3, "guidance_scale": guidance,
                              "num_images_per_prompt": batch}
    if cfg > 1:
        kwargs.update(negative_prompt="blurry", true_cfg_scale=cfg)
    packed = pipe(PROMPT, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(3)).images
    latents = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    ours = result.outputs["latents"]["out"].samples
    assert ours.shape == (batch, 16, 8, 8)
    assert (ours - latents).abs().max().item() == 0.0
    images = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(3)).images
    names = ["flux.png"] if batch == 1 else [f"flux_{i}.png" for i in range(batch)]
    for name, image in zip(names, images, strict=True):
        assert np.array_equal(png(tmp_path / name), np.asarray(image))


def test_guidance_acts_on_dev_and_not_on_schnell(tmp_path: Path) -> None:
    def latents(model: str, guidance: float) -> torch.Tensor:
        result = run_graph(tmp_path / f"{model}-{guidance}", model=f"builtin:{model}", steps=2,
                           guidance=guidance)
        return result.outputs["latents"]["out"].samples

    assert (latents("tinyflux", 1.0) - latents("tinyflux", 6.0)).abs().max().item() > 1e-3
    assert (latents("tinyflux", 0.0) - latents("tinyflux", 3.5)).abs().max().item() > 1e-3  # 0 is not unset
    assert torch.equal(latents("tinyflux-schnell", 1.0), latents("tinyflux-schnell", 6.0))


def test_true_cfg_changes_the_result(tmp_path: Path) -> None:
    plain = run_graph(tmp_path / "a", steps=2, cfg=1.0, negative="blurry").outputs["latents"]["out"].samples
    guided = run_graph(tmp_path / "b", steps=2, cfg=3.0, negative="blurry").outputs["latents"]["out"].samples
    assert (plain - guided).abs().max().item() > 1e-3


def test_a_non_flow_matching_scheduler_is_an_input_error(ctx: Any) -> None:
    from nodegraph_diffusion.latent_nodes import empty_latents
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.paths import ModelRef
    from nodegraph_diffusion.sampler_nodes import sample
    from nodegraph_diffusion.schedulers import scheduler as scheduler_node
    from nodegraph_diffusion.text_nodes import encode_text

    from nodegraph.api import InputError

    model = load_model(ctx, ModelRef("builtin:tinyflux"))
    assert (model.unet.source.family, model.text_encoder.source.family) == ("flux", "flux")
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    empty = empty_latents(64, 64, 1, model.unet)
    euler = scheduler_node(model.scheduler, "euler")
    with pytest.raises(InputError) as info:
        sample(ctx, model.unet, euler, positive, empty, steps=2, cfg=1.0)
    assert info.value.field == "scheduler"
    assert "flow-matching" in str(info.value)


@pytest.mark.parametrize("model_name", ["builtin:tinyflux", "builtin:tinysd3"])
def test_a_k_sampler_on_a_flow_matching_model_is_an_input_error(ctx: Any, model_name: str) -> None:
    """ComfyUI's KSampler semantics (diffusion.k_sampler) drive eps/v UNets; a flow-matching model is
    refused at the scheduler, not failed inside the loop."""
    from nodegraph_diffusion.k_sampler_nodes import k_sampler
    from nodegraph_diffusion.latent_nodes import empty_latents
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.paths import ModelRef
    from nodegraph_diffusion.sampler_nodes import sample
    from nodegraph_diffusion.text_nodes import encode_text

    from nodegraph.api import InputError

    model = load_model(ctx, ModelRef(model_name))
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    empty = empty_latents(64, 64, 1, model.unet)
    with pytest.raises(InputError) as info:
        sample(ctx, model.unet, k_sampler(model.scheduler, "euler", "normal"), positive, empty, steps=2, cfg=1.0)
    assert info.value.field == "scheduler"
    assert "flow-matching" in str(info.value)


@pytest.mark.parametrize(("other", "label"), [("tinysd3", "SD3"), ("tinyxl", "SDXL")])
def test_flux_conditioning_into_another_family_fails_validation(tmp_path: Path, other: str,
                                                                label: str) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    registry = build_registry()
    load_plan(GRAPHS / "flux.yaml", registry)  # one family throughout: fine
    load_plan(GRAPHS / "flux.yaml", registry, {"model": "builtin:tinyflux-schnell"})
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED % other)
    with pytest.raises(GraphError) as info:
        load_plan(path, registry)
    (problem,) = info.value.problems
    assert (problem.node, problem.field, problem.line) == ("latents", "positive", 7)
    assert "'positive' gets Flux.1 conditioning from node 'text'" in str(problem)
    assert f"'unet' is an {label}" in str(problem)
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--no-cache", "-q"],
                                obj={"registry": registry})
    assert result.exit_code == 2, result.output
    assert "mixed.yaml" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


MIXED = """\
version: 1
nodes:
  flux:    {type: diffusion.load_model, path: "builtin:tinyflux"}
  other:   {type: diffusion.load_model, path: "builtin:%s"}
  text:    {type: diffusion.encode_text, encoder: "@flux.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64, unet: "@other.unet"}
  latents: {type: diffusion.sample, unet: "@other.unet", scheduler: "@other.scheduler", positive: "@text",
            latents: "@empty", cfg: 1.0}
"""


@pytest.mark.parametrize("strength", [0.5, 1.0, 0.6])
def test_flux_img2img_graph_equals_flux_img2img_pipeline(tmp_path: Path, strength: float) -> None:
    from diffusers import FluxImg2ImgPipeline

    prompt = "a big red square in the center, blue background"
    result = Engine().run(GRAPHS / "flux_img2img.yaml", {"steps": 4, "seed": 5, "strength": strength},
                          RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False))
    pipe = FluxImg2ImgPipeline(**flux_pipe("tinyflux").components)
    pipe.set_progress_bar_config(disable=True)
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        picture = im.convert("RGB")
    kwargs: dict[str, Any] = {"image": picture, "strength": strength, "height": 64, "width": 64,
                              "num_inference_steps": 4, "guidance_scale": 3.5}
    packed = pipe(prompt, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(5)).images
    latents = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    assert (result.outputs["latents"]["out"].samples - latents).abs().max().item() == 0.0
    image = pipe(prompt, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "flux_img2img.png"), np.asarray(image))


def test_an_sd1_lora_on_flux_fails_validation(tmp_path: Path) -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    lora = BUILTIN_DIR / "tinyworld-style" / "tinyworld-style.safetensors"
    path = tmp_path / "lora.yaml"
    path.write_text(f"""\
version: 1
nodes:
  model: {{type: diffusion.load_model, path: "builtin:tinyflux"}}
  lora:  {{type: diffusion.load_lora, unet: "@model.unet", text_encoder: "@model.text_encoder",
          path: "{lora}"}}
""")
    with pytest.raises(GraphError) as info:
        load_plan(path, build_registry())
    (problem,) = info.value.problems
    assert (problem.node, problem.field, problem.line) == ("lora", "path", 5)
    assert "this LoRA is not for Flux.1 models" in str(problem) and "SD1.x" in str(problem)


@pytest.mark.parametrize("graph", ["flux.yaml", "sd35.yaml"])  # both read latents in 2x2 patches
def test_a_size_that_does_not_pack_is_an_input_error(tmp_path: Path, graph: str) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    result = CliRunner().invoke(app, ["run", str(GRAPHS / graph), "--out", str(tmp_path / "out"),
                                      "--no-cache", "-q", "--set", "width=72", "--set", "steps=1"])
    assert result.exit_code == 2, result.output
    assert "field 'latents'" in result.output and "multiple of 16 pixels" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
