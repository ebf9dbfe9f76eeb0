"""SD3 as a model family: the graph gives StableDiffusion3Pipeline's tensors and pixels exactly.

All on builtin:tinysd3 (a tiny random SD3, see nodegraph_diffusion/tiny_sd3.py) or a copy of it
without T5, CPU fp32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
from nodegraph_diffusion.text_nodes import encode_text
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
TINYSD3 = BUILTIN_DIR / "tinysd3"
PROMPT = "a big red circle in the center, blue background"


def sd3_pipe(folder: Path = TINYSD3, **components: Any) -> Any:
    from diffusers import StableDiffusion3Pipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True, **components)
    pipe.set_progress_bar_config(disable=True)
    # the graph's weights live in their own memory, not in views of the mapped files; the pipeline's
    # must too, or a small matmul (CLIP's text projection) sums in another order (6e-8 off, measured)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        if part is not None:
            own_storage(part)
    return pipe


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def no_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:tinysd3 without its T5 encoder (`text_encoder_3: null`), as diffusers allows."""
    folder = tmp_path_factory.mktemp("sd3") / "tinysd3-no-t5"
    shutil.copytree(TINYSD3, folder, ignore=shutil.ignore_patterns("text_encoder_3", "tokenizer_3"))
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder_3"] = index["tokenizer_3"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def run_graph(tmp_path: Path, params: dict[str, Any]) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(GRAPHS / "sd35.yaml", params, options)


def test_tinysd3_folder_is_the_sd3_family(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinysd3"))
    assert model.unet.source.family == "sd3"
    assert dict(model.scheduler.base_config)["_class_name"] == "FlowMatchEulerDiscreteScheduler"


def test_sd35_graph_with_cfg_and_negative_equals_pipeline(tmp_path: Path) -> None:
    params = {"steps": 3, "seed": 5, "negative": "blurry, green", "cfg": 4.5}
    result = run_graph(tmp_path, params)
    pipe = sd3_pipe()
    kwargs = {"negative_prompt": "blurry, green", "height": 64, "width": 64, "num_inference_steps": 3,
              "guidance_scale": 4.5}
    latents = pipe(PROMPT, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(5)).images
    ours = result.outputs["latents"]["out"].samples
    assert ours.shape == (1, 16, 8, 8)
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe(PROMPT, **kwargs, output_type="pt", generator=torch.Generator().manual_seed(5)).images
    assert (result.outputs["image"]["out"].pixels - image).abs().max().item() == 0.0
    pil = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "sd35.png"), np.asarray(pil))


def test_prompts_per_encoder_equal_encode_prompt(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinysd3"))
    pipe = sd3_pipe()
    cases = ((PROMPT, None, None, 0), (PROMPT, "a small green square", None, 0),
             (PROMPT, None, "a yellow triangle on the left", 0), (PROMPT, None, None, 1), ("", None, None, 0))
    for text, text_2, text_3, skip in cases:
        cond = encode_text(ctx, model.text_encoder, text, clip_skip=skip, text_2=text_2, text_3=text_3)
        with torch.no_grad():  # as the pipeline's __call__ runs it (T5 sums in another order with grad on)
            embeds, _, pooled, _ = pipe.encode_prompt(text, prompt_2=text_2, prompt_3=text_3, device="cpu",
                                                      do_classifier_free_guidance=False,
                                                      clip_skip=skip or None)
        assert torch.equal(cond.embeds, embeds), (text, text_2, text_3, skip)
        assert torch.equal(cond.pooled, pooled), (text, text_2, text_3, skip)
    base = encode_text(ctx, model.text_encoder, PROMPT)
    other = encode_text(ctx, model.text_encoder, PROMPT, text_3="a yellow triangle on the left")
    assert not torch.equal(base.embeds[:, 77:], other.embeds[:, 77:])  # text_3 reaches T5's tokens
    assert torch.equal(base.embeds[:, :77], other.embeds[:, :77])  # and only them


def test_without_t5_equals_pipeline(tmp_path: Path, no_t5_dir: Path) -> None:
    params = {"model": str(no_t5_dir), "steps": 2, "seed": 1, "cfg": 3.0}
    result = run_graph(tmp_path, params)
    pipe = sd3_pipe(no_t5_dir, text_encoder_3=None, tokenizer_3=None)
    assert pipe.text_encoder_3 is None
    latents = pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=2, guidance_scale=3.0,
                   output_type="latent", generator=torch.Generator().manual_seed(1)).images
    ours = result.outputs["latents"]["out"].samples
    assert (ours - latents).abs().max().item() == 0.0
    cond = result.outputs["positive"]["out"]
    assert cond.embeds.shape == (1, 77 + 256, 64) and not cond.embeds[:, 77:].any()  # T5's part: zeros


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_sd35_img2img_graph_equals_img2img_pipeline(tmp_path: Path, strength: float) -> None:
    from diffusers import StableDiffusion3Img2ImgPipeline

    prompt = "a big red square in the center, blue background"
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    params = {"steps": 3, "seed": 5, "strength": strength, "negative": "blurry"}
    result = Engine().run(GRAPHS / "sd35_img2img.yaml", params, options)
    pipe = StableDiffusion3Img2ImgPipeline(**sd3_pipe().components)
    pipe.set_progress_bar_config(disable=True)
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        picture = im.convert("RGB")
    kwargs: dict[str, Any] = {"image": picture, "strength": strength, "negative_prompt": "blurry",
                              "num_inference_steps": 3, "guidance_scale": 4.5, "height": 64, "width": 64}
    latents = pipe(prompt, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(5)).images
    assert (result.outputs["latents"]["out"].samples - latents).abs().max().item() == 0.0
    image = pipe(prompt, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "sd35_img2img.png"), np.asarray(image))
