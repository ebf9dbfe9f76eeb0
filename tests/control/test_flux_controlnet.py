"""Flux ControlNets (nodegraph_control/flux_controlnet.py): graphs/flux_controlnet.yaml and variants of
it equal FluxControlNetPipeline on the same seed, to the last bit on CPU fp32 — one ControlNet, a
union ControlNet with a control mode, two ControlNets (FluxMultiControlNetModel), start/end, true CFG.

The tiny ControlNets (builtin:tinyflux-canny, -union) are random in every weight, zero layers included,
so they act; `test_the_controlnet_acts` shows it.
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
GRAPH = GRAPHS / "flux_controlnet.yaml"
IMAGE = GRAPHS / "inputs" / "scene_64.png"
PROMPT = "a big red circle in the center, blue background"
SEED, STEPS = 3, 3
# a second unit beside edge_cn: the same edges through another ControlNet, with its own range
SECOND = """  second:   {type: control.load_controlnet, path: %s}
  second_cn: {type: control.controlnet, model: "@second", image: "@edges", vae: "@model.vae", strength: 0.5,
              start: 0.3, end: 1.0%s}
"""


def flux_pipe(controlnet: Any) -> Any:
    from diffusers import FluxControlNetPipeline, FluxPipeline
    from nodegraph_diffusion.loading import own_storage

    base = FluxPipeline.from_pretrained(BUILTIN_DIR / "tinyflux", local_files_only=True)
    pipe = FluxControlNetPipeline(**base.components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    return pipe


def net(name: str) -> Any:
    from diffusers import FluxControlNetModel

    return FluxControlNetModel.from_pretrained(BUILTIN_DIR / name, local_files_only=True).eval()


def run(tmp_path: Path, graph: Path = GRAPH, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(graph, {"steps": STEPS, "seed": SEED, "image": str(IMAGE), **params}, options)


def variant(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    """graphs/flux_controlnet.yaml with text replaced (run it with `image=IMAGE`)."""
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


def compare(result: Any, tmp_path: Path, pipe: Any, **kwargs: Any) -> None:
    """Our latents and PNG against the pipeline's, same seed (its generator, fresh each call)."""
    kwargs = {"height": 64, "width": 64, "num_inference_steps": STEPS, "guidance_scale": 3.5, **kwargs}
    generator = torch.Generator().manual_seed(SEED)
    packed = pipe(PROMPT, **kwargs, output_type="latent", generator=generator).images
    latents = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    ours = result.outputs["latents"]["out"].samples
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(SEED)).images[0]
    assert np.array_equal(png(tmp_path / "flux_controlnet.png"), np.asarray(image))


@pytest.mark.parametrize(("strength", "start", "end"), [(0.7, 0.0, 1.0), (1.3, 0.34, 1.0), (0.9, 0.0, 0.5)])
def test_one_controlnet_equals_flux_controlnet_pipeline(tmp_path: Path, strength: float, start: float,
                                                        end: float) -> None:
    result = run(tmp_path, strength=strength, start=start, end=end)
    edges = as_pil(result.outputs["edges"]["out"])
    compare(result, tmp_path, flux_pipe(net("tinyflux-canny")), control_image=edges,
            controlnet_conditioning_scale=strength, control_guidance_start=start, control_guidance_end=end)


def test_union_controlnet_with_a_mode_equals_the_pipeline(tmp_path: Path) -> None:
    graph = variant(tmp_path, [("end: $end}", "end: $end, control_mode: depth}")])
    result = run(tmp_path, graph, controlnet="builtin:tinyflux-union")
    edges = as_pil(result.outputs["edges"]["out"])
    pipe = flux_pipe(net("tinyflux-union"))
    compare(result, tmp_path, pipe, control_image=edges, control_mode=2, controlnet_conditioning_scale=0.7)
    # the mode acts: another mode, other latents
    other = pipe(PROMPT, height=64, width=64, num_inference_steps=STEPS, control_image=edges, control_mode=4,
                 controlnet_conditioning_scale=0.7, output_type="latent",
                 generator=torch.Generator().manual_seed(SEED)).images
    packed = pipe._pack_latents(result.outputs["latents"]["out"].samples, 1, 16, 8, 8)
    assert (other - packed).abs().max().item() > 1e-3


def test_two_controlnets_equal_flux_multi_controlnet_pipeline(tmp_path: Path) -> None:
    from diffusers import FluxMultiControlNetModel

    second = SECOND % ("builtin:tinyflux-union", ", control_mode: tile")
    graph = variant(tmp_path, [("  text:", second + "  text:"),
                               ('conditions: ["@edge_cn"]', 'conditions: ["@edge_cn", "@second_cn"]')])
    result = run(tmp_path, graph, strength=0.8)
    edges = as_pil(result.outputs["edges"]["out"])
    multi = FluxMultiControlNetModel([net("tinyflux-canny"), net("tinyflux-union")])
    compare(result, tmp_path, flux_pipe(multi), control_image=[edges, edges], control_mode=[None, 1],
            controlnet_conditioning_scale=[0.8, 0.5], control_guidance_start=[0.0, 0.3],
            control_guidance_end=[1.0, 1.0])


def test_the_controlnet_acts(tmp_path: Path) -> None:
    def latents(strength: float) -> torch.Tensor:
        return run(tmp_path / str(strength), strength=strength).outputs["latents"]["out"].samples

    off, on = latents(0.0), latents(1.0)
    assert (on - off).abs().max().item() > 0.05
