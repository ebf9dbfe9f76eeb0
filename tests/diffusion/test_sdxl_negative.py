"""SDXL without a negative prompt: zeros, as StableDiffusionXLPipeline guides when the model's
model_index.json says force_zeros_for_empty_prompt (tinyxl, like SDXL base 1.0: true; the refiner: false).

`negative_prompt=""` is not that: the pipeline encodes the empty text then, and so does a graph whose
negative is diffusion.encode_text of "" (tests/diffusion/test_sdxl.py checks that one).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents

from nodegraph.api import InputError

PROMPT = "a big red circle in the center, blue background"


def test_no_negative_on_sdxl_base_equals_the_pipelines_zeros(ctx: Any) -> None:
    from diffusers import StableDiffusionXLPipeline
    from nodegraph_diffusion.loading import own_storage

    assert json.loads((BUILTIN_DIR / "tinyxl" / "model_index.json").read_text())["force_zeros_for_empty_prompt"]
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    ours = sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(1, 4, 8, 8)), seed=2,
                  steps=3, cfg=5.0).samples
    pipe = StableDiffusionXLPipeline.from_pretrained(BUILTIN_DIR / "tinyxl", local_files_only=True,
                                                     add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    kwargs = {"height": 64, "width": 64, "num_inference_steps": 3, "guidance_scale": 5.0,
              "output_type": "latent"}
    theirs = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(2)).images
    assert float((ours - theirs).abs().max()) == 0.0
    encoded_empty = pipe(PROMPT, negative_prompt="", **kwargs, generator=torch.Generator().manual_seed(2)).images
    assert not torch.equal(theirs, encoded_empty)  # the zeros are not the encoded empty prompt


def test_no_negative_on_the_refiner_still_asks_for_one(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinyxl-refiner"))
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    with pytest.raises(InputError, match="negative") as err:
        sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(1, 4, 8, 8)), steps=2, cfg=5.0)
    assert err.value.field == "negative"
