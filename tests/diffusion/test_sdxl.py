"""SDXL as a model family: the graph gives StableDiffusionXLPipeline's tensors and pixels exactly.

All on builtin:tinyxl (a tiny random SDXL, see nodegraph_diffusion/tiny_sdxl.py), CPU fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents, SchedulerSpec
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
TINYXL = BUILTIN_DIR / "tinyxl"
PROMPT = "a big red circle in the center, blue background"


def xl_pipe(cls: Any = None, scheduler: str = "euler") -> Any:
    from diffusers import StableDiffusionXLPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = (cls or StableDiffusionXLPipeline).from_pretrained(TINYXL, local_files_only=True,
                                                              add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    config = tuple(sorted(dict(pipe.scheduler.config).items()))
    pipe.scheduler = make_scheduler(SchedulerSpec(scheduler, config))
    return pipe


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_tinyxl_folder_is_the_sdxl_family(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    assert model.unet.source.family == "sdxl"
    assert model.text_encoder.source.family == "sdxl"
    tiny = load_model(ctx, ModelRef("builtin:tinyworld"))
    assert tiny.unet.source.family == "sd1"


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m", "euler_a"])
def test_sdxl_graph_png_equals_pipeline_png(tmp_path: Path, scheduler: str) -> None:
    params = {"steps": 4, "seed": 3, "negative": "blurry", "scheduler": scheduler}
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / "sdxl.yaml", params, options)
    pipe = xl_pipe(scheduler=scheduler)
    kwargs = {"negative_prompt": "blurry", "height": 64, "width": 64, "num_inference_steps": 4,
              "guidance_scale": 5.0}
    latents = pipe(PROMPT, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(3)).images
    ours = result.outputs["latents"]["out"].samples
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(3)).images[0]
    assert np.array_equal(png(tmp_path / "sdxl.png"), np.asarray(image))


def test_text_2_clip_skip_and_empty_equal_encode_prompt(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    pipe = xl_pipe()
    for text, text_2, skip in ((PROMPT, None, 0), (PROMPT, "a small green square", 0), (PROMPT, None, 1),
                               ("", None, 0)):
        cond = encode_text(ctx, model.text_encoder, text, clip_skip=skip, text_2=text_2)
        embeds, _, pooled, _ = pipe.encode_prompt(text, prompt_2=text_2, device="cpu",
                                                  do_classifier_free_guidance=False, clip_skip=skip or None)
        assert torch.equal(cond.embeds, embeds), (text, text_2, skip)
        assert torch.equal(cond.pooled, pooled)
        assert cond.family == "sdxl"
    other = encode_text(ctx, model.text_encoder, PROMPT, text_2="a small green square")
    same = encode_text(ctx, model.text_encoder, PROMPT)
    assert not torch.equal(other.embeds[..., 32:], same.embeds[..., 32:])  # the second encoder's half
    assert torch.equal(other.embeds[..., :32], same.embeds[..., :32])


def test_size_micro_conditioning_equals_pipeline(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    positive = encode_text(ctx, model.text_encoder, PROMPT, original_width=128, original_height=96,
                           crop_left=8, crop_top=16, target_width=64, target_height=48)
    negative = encode_text(ctx, model.text_encoder, "", original_width=32, original_height=40)
    out = sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(1, 4, 8, 8)), negative,
                 seed=5, steps=3, cfg=4.0)
    pipe = xl_pipe(scheduler="default")
    theirs = pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=3, guidance_scale=4.0,
                  original_size=(96, 128), crops_coords_top_left=(16, 8), target_size=(48, 64),
                  negative_original_size=(40, 32), negative_crops_coords_top_left=(0, 0),
                  negative_target_size=(64, 64), output_type="latent",
                  generator=torch.Generator().manual_seed(5)).images
    assert (out.samples - theirs).abs().max().item() == 0.0
    plain = sample(ctx, model.unet, model.scheduler, encode_text(ctx, model.text_encoder, PROMPT),
                   Latents(torch.zeros(1, 4, 8, 8)), negative, seed=5, steps=3, cfg=4.0)
    assert not torch.equal(plain.samples, out.samples)  # the sizes reach the UNet


def test_sd1_conditioning_into_sdxl_unet_is_an_input_error(ctx: Any) -> None:
    xl = load_model(ctx, ModelRef("builtin:tinyxl"))
    sd1 = load_model(ctx, ModelRef("builtin:tinyworld"))
    cond = encode_text(ctx, sd1.text_encoder, PROMPT)
    with pytest.raises(InputError, match="'sd1' text encoder") as err:
        sample(ctx, xl.unet, xl.scheduler, cond, Latents(torch.zeros(1, 4, 8, 8)), None, cfg=1.0)
    assert err.value.field == "positive"
    with pytest.raises(InputError, match="text_2 is for models with two text encoders"):
        encode_text(ctx, sd1.text_encoder, PROMPT, text_2="x")


MIXED_DECODE = """version: 1
nodes:
  xl:      {type: diffusion.load_model, path: "builtin:tinyxl"}
  sd1:     {type: diffusion.load_model, path: "builtin:tinyworld"}
  text:    {type: diffusion.encode_text, encoder: "@xl.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64}
  latents: {type: diffusion.sample, unet: "@xl.unet", scheduler: "@xl.scheduler", positive: "@text",
            latents: "@empty", cfg: 1.0, steps: 2}
  image:   {type: diffusion.vae_decode, vae: "@sd1.vae", latents: "@latents"}
"""


def test_family_mismatch_is_found_at_validation(tmp_path: Path) -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    registry = build_registry()
    load_plan(GRAPHS / "sdxl.yaml", registry)  # one family throughout: fine
    load_plan(GRAPHS / "sdxl.yaml", registry, {"model": "builtin:tinyworld"})
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED_DECODE)
    with pytest.raises(GraphError) as info:
        load_plan(path, registry)
    (problem,) = info.value.problems
    assert (problem.node, problem.field, problem.line) == ("image", "latents", 9)
    assert "'latents' gets SDXL latents from node 'latents'" in str(problem)
    assert "'vae' is an SD1.x VAE from node 'sd1'" in str(problem)


def _input(name: str, mode: str) -> PILImage.Image:
    with PILImage.open(GRAPHS / "inputs" / name) as im:
        return im.convert(mode)


@pytest.mark.parametrize(("graph", "pipeline", "scheduler"), [
    ("img2img", "StableDiffusionXLImg2ImgPipeline", "euler_a"),
    ("inpaint", "StableDiffusionXLInpaintPipeline", "ddim"),
])
def test_img2img_and_inpaint_graphs_on_sdxl_equal_pipelines(tmp_path: Path, graph: str, pipeline: str,
                                                            scheduler: str) -> None:
    """The SD1.x img2img/inpaint graphs, pointed at an SDXL folder, give the SDXL pipelines' pixels."""
    import diffusers
    import yaml

    declared = yaml.safe_load((GRAPHS / f"{graph}.yaml").read_text())["params"]
    params = {"steps": 4, "seed": 5, "scheduler": scheduler, "model": "builtin:tinyxl"}
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / f"{graph}.yaml", params, options)
    pipe = xl_pipe(getattr(diffusers, pipeline), scheduler)
    kwargs: dict[str, Any] = {"negative_prompt": "", "image": _input("scene_64.png", "RGB"),
                              "num_inference_steps": 4, "guidance_scale": declared["cfg"]["default"],
                              "strength": declared["strength"]["default"]}
    if graph == "inpaint":
        kwargs.update(mask_image=_input("scene_64_mask.png", "L"), height=64, width=64)
    prompt = declared["prompt"]["default"]
    theirs = pipe(prompt, output_type="latent", generator=torch.Generator().manual_seed(5), **kwargs).images
    assert (result.outputs["latents"]["out"].samples - theirs).abs().max().item() == 0.0
    image = pipe(prompt, generator=torch.Generator().manual_seed(5), **kwargs).images[0]
    assert np.array_equal(png(tmp_path / f"{graph}.png"), np.asarray(image))


def test_refiner_graph_equals_the_ensemble_of_experts_recipe(tmp_path: Path) -> None:
    """base(denoising_end=0.8, output_type="latent") -> refiner(denoising_start=0.8, image=latents)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from nodegraph_diffusion.loading import own_storage

    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / "sdxl_refiner.yaml", {"seed": 4, "negative": "blurry"}, options)
    base = xl_pipe()
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(BUILTIN_DIR / "tinyxl-refiner",
                                                               local_files_only=True, add_watermarker=False)
    refiner.set_progress_bar_config(disable=True)
    for part in (refiner.unet, refiner.vae, refiner.text_encoder_2):
        own_storage(part)
    config = tuple(sorted(dict(refiner.scheduler.config).items()))
    refiner.scheduler = make_scheduler(SchedulerSpec("euler", config))
    common = {"negative_prompt": "blurry", "num_inference_steps": 10, "guidance_scale": 5.0}
    handed = base(PROMPT, **common, height=64, width=64, denoising_end=0.8, output_type="latent",
                  generator=torch.Generator().manual_seed(4)).images
    assert torch.equal(result.outputs["noisy"]["out"].samples, handed)
    final = refiner(PROMPT, **common, image=handed, denoising_start=0.8, output_type="latent",
                    generator=torch.Generator().manual_seed(4)).images
    assert (result.outputs["latents"]["out"].samples - final).abs().max().item() == 0.0
    image = refiner(PROMPT, **common, image=handed, denoising_start=0.8,
                    generator=torch.Generator().manual_seed(4)).images[0]
    assert np.array_equal(png(tmp_path / "sdxl_refiner.png"), np.asarray(image))


@pytest.mark.parametrize("guess_mode", [False, True])
def test_sdxl_controlnet_equals_pipeline(ctx: Any, tmp_path: Path, guess_mode: bool) -> None:
    """An SDXL ControlNet (from the tiny SDXL UNet, perturbed: a fresh one is a no-op) in the sampler
    equals StableDiffusionXLControlNetPipeline; it gets the pooled embeds and time ids too."""
    from diffusers import StableDiffusionXLControlNetPipeline
    from nodegraph_control.nodes import controlnet, load_controlnet
    from nodegraph_control.tiny_control import build_tiny_controlnet
    from nodegraph_diffusion.loading import own_storage

    from nodegraph.api import Image

    base = xl_pipe()
    net = build_tiny_controlnet(base.unet, seed=3)
    net.save_pretrained(tmp_path / "cn-xl", safe_serialization=True)
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    pixels = torch.from_numpy(np.array(_input("scene_64.png", "RGB"))).permute(2, 0, 1)[None] / 255.0
    unit = controlnet(load_controlnet(ctx, str(tmp_path / "cn-xl")), Image(pixels), strength=0.8, start=0.0,
                      end=0.75, guess_mode=guess_mode)
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    negative = encode_text(ctx, model.text_encoder, "")
    ours = sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(1, 4, 8, 8)), negative,
                  seed=2, steps=4, cfg=5.0, conditions=[unit])
    pipe = StableDiffusionXLControlNetPipeline(**{k: v for k, v in base.components.items()
                                                  if k not in ("image_encoder", "feature_extractor")},
                                               controlnet=own_storage(net), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    config = tuple(sorted(dict(base.scheduler.config).items()))
    pipe.scheduler = make_scheduler(SchedulerSpec("default", config))
    theirs = pipe(PROMPT, negative_prompt="", image=_input("scene_64.png", "RGB"), height=64, width=64,
                  num_inference_steps=4, guidance_scale=5.0, controlnet_conditioning_scale=0.8,
                  control_guidance_start=0.0, control_guidance_end=0.75, guess_mode=guess_mode,
                  output_type="latent", generator=torch.Generator().manual_seed(2)).images
    assert (ours.samples - theirs).abs().max().item() == 0.0
    plain = sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(1, 4, 8, 8)), negative,
                   seed=2, steps=4, cfg=5.0)
    assert not torch.equal(plain.samples, ours.samples)  # the ControlNet acts


SD1_CONTROLNET_ON_XL = """version: 1
nodes:
  xl:      {type: diffusion.load_model, path: "builtin:tinyxl"}
  text:    {type: diffusion.encode_text, encoder: "@xl.text_encoder", text: "a red circle"}
  empty:   {type: diffusion.empty_latents, width: 64, height: 64}
  pose:    {type: control.load_controlnet, path: "builtin:tinyworld-pose"}
  image:   {type: core.load_image, path: "../graphs/inputs/scene_64.png"}
  unit:    {type: control.controlnet, model: "@pose", image: "@image"}
  latents: {type: diffusion.sample, unet: "@xl.unet", scheduler: "@xl.scheduler", positive: "@text",
            latents: "@empty", cfg: 1.0, steps: 2, conditions: ["@unit"]}
"""


def test_sd1_controlnet_on_sdxl_sampler_fails_validation(tmp_path: Path) -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    path = tmp_path / "g" / "mixed.yaml"
    path.parent.mkdir()
    path.write_text(SD1_CONTROLNET_ON_XL)
    with pytest.raises(GraphError) as info:
        load_plan(path, build_registry())
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == ("latents", "conditions")
    assert "a SD1.x control unit from node 'unit' (model node 'pose')" in str(problem)
    assert "'unet' is an SDXL UNet from node 'xl'" in str(problem)


def test_sdxl_controlnet_graph_equals_pipeline(tmp_path: Path) -> None:
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
    from nodegraph_diffusion.loading import own_storage

    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / "sdxl_controlnet.yaml", {"steps": 4, "seed": 6}, options)
    base = xl_pipe()
    net = own_storage(ControlNetModel.from_pretrained(BUILTIN_DIR / "tinyxl-edge", local_files_only=True))
    parts = {k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")}
    pipe = StableDiffusionXLControlNetPipeline(**parts, controlnet=net, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"negative_prompt": "", "image": result.outputs["edges"]["out"].pixels, "height": 64,
              "width": 64, "num_inference_steps": 4, "guidance_scale": 5.0,
              "controlnet_conditioning_scale": 0.8}
    theirs = pipe(PROMPT, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(6)).images
    assert (result.outputs["latents"]["out"].samples - theirs).abs().max().item() == 0.0
    image = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(6)).images[0]
    assert np.array_equal(png(tmp_path / "sdxl_controlnet.png"), np.asarray(image))


def test_lora_is_refused_for_a_family_without_lora_support(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDXL reads LoRA files (test_lora_sdxl.py); a family with `supports_lora = False` is refused."""
    from nodegraph_diffusion.families.sdxl import SDXLFamily
    from nodegraph_diffusion.model_nodes import load_lora
    from nodegraph_diffusion.paths import LoraRef

    monkeypatch.setattr(SDXLFamily, "supports_lora", False)
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    with pytest.raises(InputError, match="not supported yet for SDXL") as err:
        load_lora(ctx, model.unet, model.text_encoder, LoraRef("builtin:tinyworld-style"))
    assert err.value.field == "unet"
