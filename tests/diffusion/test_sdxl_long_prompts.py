"""SDXL prompts over one chunk: the empty-prompt encoding that pads the shorter side is made only then.

A one-chunk prompt pays no extra encoder call (StableDiffusionXLPipeline makes none either: the engine
ran 6 encoder calls to the pipeline's 4 for a prompt and an empty negative); a long one carries the
empty encoding of both encoders, so a short text_2 and a short negative (empty or not) are padded.
"""

from __future__ import annotations

from typing import Any

import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents

LONG = ", ".join(["a big red circle in the center"] * 12) + ", blue background"  # ~90 tokens


def count_calls(model: Any) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_short_prompts_pay_no_extra_encoder_call(ctx: Any) -> None:
    from nodegraph_diffusion.loading import use_text_encoder

    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    with use_text_encoder(ctx, model.text_encoder) as (_, one), \
            use_text_encoder(ctx, model.text_encoder, "text_encoder_2", "tokenizer_2") as (_, two):
        first, second = count_calls(one), count_calls(two)
    short = encode_text(ctx, model.text_encoder, "a red circle")
    assert (first[0], second[0]) == (1, 1) and short.empty is None
    empty = encode_text(ctx, model.text_encoder, "")
    assert (first[0], second[0]) == (2, 2) and torch.equal(empty.empty, empty.embeds)
    long = encode_text(ctx, model.text_encoder, LONG)
    assert long.embeds.shape[1] == 154 and (first[0], second[0]) == (5, 5)  # 2 chunks + the empty prompt
    assert torch.equal(long.empty, empty.embeds)


def test_long_prompts_pad_short_sides(ctx: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    long = encode_text(ctx, model.text_encoder, LONG, text_2="a red circle")  # 154 and 77 tokens
    assert long.embeds.shape[1] == 154
    start = Latents(torch.zeros(1, 4, 8, 8))
    for negative in ("", "blurry"):  # its own empty encoding, or the long side's borrowed
        neg = encode_text(ctx, model.text_encoder, negative)
        out = sample(ctx, model.unet, model.scheduler, long, start, negative=neg, steps=2, cfg=5.0).samples
        assert torch.isfinite(out).all()
    plain = sample(ctx, model.unet, model.scheduler, long, start, negative=encode_text(ctx, model.text_encoder, ""),
                   steps=2, cfg=5.0).samples
    blurry = sample(ctx, model.unet, model.scheduler, long, start,
                    negative=encode_text(ctx, model.text_encoder, "blurry"), steps=2, cfg=5.0).samples
    assert not torch.equal(plain, blurry)
