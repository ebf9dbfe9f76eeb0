"""SD3 ControlNets (nodegraph_control/sd3_controlnet.py): graphs/sd35_controlnet.yaml and variants of it
equal StableDiffusion3ControlNetPipeline on the same seed, to the last bit on CPU fp32 — one ControlNet
at several strengths and start/end windows, with and without CFG, an InstantX-style net, two nets
(SD3MultiControlNetModel).

The pipeline samples the control image's VAE encoding from torch's *global* stream (its only global
draw); the graph draws it from a second stream seeded with the sampler's seed, so each pipeline call here
runs after `torch.manual_seed(SEED)` as well as with a seeded generator; `test_the_pipeline_draws_the_
control_latents_from_the_global_stream` shows the global seed matters.
The tiny ControlNets are random in every weight, zero layers included, and builtin:tinysd3 has two
blocks (its last, `context_pre_only`, takes no residual), so they act; `test_the_controlnet_acts` shows it.
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
GRAPH = GRAPHS / "sd35_controlnet.yaml"
IMAGE = GRAPHS / "inputs" / "scene_64.png"
PROMPT = "a big red circle in the center, blue background"
SEED, STEPS, CFG = 3, 3, 3.5
SECOND = """  second:   {type: control.load_controlnet, path: "%s"}
  second_cn: {type: control.controlnet, model: "@second", image: "@edges", vae: "@model.vae", strength: 0.5,
              start: 0.3, end: 1.0}
"""


def sd3_controlnet_pipe(controlnet: Any) -> Any:
    from diffusers import StableDiffusion3ControlNetPipeline, StableDiffusion3Pipeline
    from nodegraph_diffusion.loading import own_storage

    base = StableDiffusion3Pipeline.from_pretrained(BUILTIN_DIR / "tinysd3", local_files_only=True)
    components = {k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")}
    pipe = StableDiffusion3ControlNetPipeline(**components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    # the graph's weights live in their own memory; the pipeline's must too (see tests/diffusion/test_sd3.py)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        own_storage(part)
    return pipe


def net(path: Path) -> Any:
    """The ControlNet in its own memory, as the graph loads it (a view of the mapped file sums a small
    matmul in another order: 1.2e-7 off without CFG, measured)."""
    from diffusers import SD3ControlNetModel
    from nodegraph_diffusion.loading import own_storage

    model = SD3ControlNetModel.from_pretrained(path, local_files_only=True).eval()
    own_storage(model)
    return model


def saved_net(tmp_path: Path, seed: int, instantx: bool) -> Path:
    """Another tiny random SD3 ControlNet for builtin:tinysd3, written under `tmp_path`."""
    from diffusers import SD3Transformer2DModel
    from nodegraph_control.tiny_transformer_control import build_tiny_sd3_controlnet

    transformer = SD3Transformer2DModel.from_pretrained(BUILTIN_DIR / "tinysd3", subfolder="transformer",
                                                        local_files_only=True)
    folder = tmp_path / f"net-{seed}"
    build_tiny_sd3_controlnet(transformer, seed, instantx=instantx).save_pretrained(folder)
    return folder


def run(tmp_path: Path, graph: Path = GRAPH, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(graph, {"steps": STEPS, "seed": SEED, "cfg": CFG, "image": str(IMAGE), **params},
                        options)


def variant(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    """graphs/sd35_controlnet.yaml with text replaced (run it with `image=IMAGE`)."""
    text = GRAPH.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "variant.yaml"
    path.write_text(text)
    return path


def as_pil(image: Any) -> PILImage.Image:
    array = (image.pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return PILImage.fromarray(array)


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pipe_call(pipe: Any, global_seed: int = SEED, **kwargs: Any) -> Any:
    """The pipeline at the tests' settings; torch's global stream seeded first (the control latents')."""
    kwargs = {"height": 64, "width": 64, "num_inference_steps": STEPS, "guidance_scale": CFG,
              "negative_prompt": "", **kwargs}
    torch.manual_seed(global_seed)
    return pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(SEED)).images


def compare(result: Any, tmp_path: Path, pipe: Any, **kwargs: Any) -> None:
    """Our latents and PNG against the pipeline's, same seed."""
    latents = pipe_call(pipe, output_type="latent", **kwargs)
    assert (result.outputs["latents"]["out"].samples - latents).abs().max().item() == 0.0
    image = pipe_call(pipe, **kwargs)[0]
    assert np.array_equal(png(tmp_path / "sd35_controlnet.png"), np.asarray(image))


@pytest.mark.parametrize(("strength", "start", "end", "cfg"), [(0.7, 0.0, 1.0, CFG), (1.3, 0.34, 1.0, CFG),
                                                             (0.9, 0.0, 0.5, CFG), (0.7, 0.0, 1.0, 1.0)])
def test_one_controlnet_equals_sd3_controlnet_pipeline(tmp_path: Path, strength: float, start: float,
                                                       end: float, cfg: float) -> None:
    result = run(tmp_path, strength=strength, start=start, end=end, cfg=cfg)
    edges = as_pil(result.outputs["edges"]["out"])
    compare(result, tmp_path, sd3_controlnet_pipe(net(BUILTIN_DIR / "tinysd3-canny")), control_image=edges,
            controlnet_conditioning_scale=strength, control_guidance_start=start, control_guidance_end=end,
            guidance_scale=cfg)


def test_the_pipeline_draws_the_control_latents_from_the_global_stream(tmp_path: Path) -> None:
    result = run(tmp_path, strength=0.7)
    edges = as_pil(result.outputs["edges"]["out"])
    pipe = sd3_controlnet_pipe(net(BUILTIN_DIR / "tinysd3-canny"))
    other = pipe_call(pipe, SEED + 1, output_type="latent", control_image=edges,
                      controlnet_conditioning_scale=0.7)
    assert (result.outputs["latents"]["out"].samples - other).abs().max().item() > 1e-4


def test_instantx_style_controlnet_equals_the_pipeline(tmp_path: Path) -> None:
    """A net with joint blocks reading the prompt, its own position embedding, zeros for the pooled
    projections and no VAE shift (InstantX/SD3-Controlnet-Canny's kind)."""
    folder = saved_net(tmp_path, 909, instantx=True)
    result = run(tmp_path, controlnet=str(folder), strength=0.8)
    edges = as_pil(result.outputs["edges"]["out"])
    compare(result, tmp_path, sd3_controlnet_pipe(net(folder)), control_image=edges,
            controlnet_conditioning_scale=0.8)


def test_two_controlnets_equal_sd3_multi_controlnet_pipeline(tmp_path: Path) -> None:
    from diffusers import SD3MultiControlNetModel

    folder = saved_net(tmp_path, 910, instantx=False)
    graph = variant(tmp_path, [("  positive:", SECOND % folder + "  positive:"),
                               ('conditions: ["@edge_cn"]', 'conditions: ["@edge_cn", "@second_cn"]')])
    result = run(tmp_path, graph, strength=0.8)
    edges = as_pil(result.outputs["edges"]["out"])
    multi = SD3MultiControlNetModel([net(BUILTIN_DIR / "tinysd3-canny"), net(folder)])
    compare(result, tmp_path, sd3_controlnet_pipe(multi), control_image=[edges, edges],
            controlnet_conditioning_scale=[0.8, 0.5], control_guidance_start=[0.0, 0.3],
            control_guidance_end=[1.0, 1.0])


def test_the_controlnet_acts(tmp_path: Path) -> None:
    def latents(strength: float) -> torch.Tensor:
        return run(tmp_path / str(strength), strength=strength).outputs["latents"]["out"].samples

    off, on = latents(0.0), latents(0.7)
    assert (on - off).abs().max().item() > 0.05
