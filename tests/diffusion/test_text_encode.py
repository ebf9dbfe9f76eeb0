"""encode_text == StableDiffusionPipeline.encode_prompt for plain prompts; chunking, emphasis, clip skip."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodegraph_diffusion.model_nodes import load_lora, load_model
from nodegraph_diffusion.paths import LoraRef, ModelRef
from nodegraph_diffusion.prompt_weights import parse_emphasis
from nodegraph_diffusion.text_nodes import encode_text

PROMPTS = ["a person in a red shirt, green background", "", "Zebra émigré 42!! " * 4,
           "a red circle " * 25]  # the last is exactly 75 content tokens: still one window


@pytest.fixture
def model(ctx: Any) -> Any:
    return load_model(ctx, ModelRef("builtin:tinyworld"))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_plain_prompt_equals_pipeline_exactly(ctx: Any, model: Any, tiny_pipe: Any, prompt: str) -> None:
    ours = encode_text(ctx, model.text_encoder, prompt)
    theirs, _ = tiny_pipe.encode_prompt(prompt, "cpu", 1, False)
    assert ours.embeds.shape == theirs.shape == (1, 77, 32)
    assert (ours.embeds - theirs).abs().max().item() == 0.0
    assert ours.prompt == prompt and len(ours.token_ids) == 77
    assert ours.token_ids == tuple(tiny_pipe.tokenizer(prompt, padding="max_length", max_length=77,
                                                       truncation=True).input_ids)


def test_negative_empty_prompt_equals_pipeline_uncond(ctx: Any, model: Any, tiny_pipe: Any) -> None:
    _, uncond = tiny_pipe.encode_prompt("a red circle", "cpu", 1, True, negative_prompt="")
    assert torch.equal(encode_text(ctx, model.text_encoder, "").embeds, uncond)


def test_clip_skip_is_penultimate_layer_with_final_norm(ctx: Any, model: Any, tiny_pipe: Any) -> None:
    """diffusers 0.42's own clip_skip path fails on transformers 5 (no `text_model`), so the reference is
    its documented computation: hidden_states[-(clip_skip + 1)] through the final layer norm."""
    ids = tiny_pipe.tokenizer("a red circle", padding="max_length", max_length=77,
                              return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = tiny_pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        expected = tiny_pipe.text_encoder.final_layer_norm(hidden[-2])
    ours = encode_text(ctx, model.text_encoder, "a red circle", clip_skip=1)
    assert torch.equal(ours.embeds, expected)
    assert not torch.equal(ours.embeds, encode_text(ctx, model.text_encoder, "a red circle").embeds)


def test_long_prompt_is_chunked_a1111_style(ctx: Any, model: Any, tiny_pipe: Any) -> None:
    words = ("a red circle " * 25).split() + ["on", "a", "blue", "sky"]  # 79 tokens -> 2 chunks
    out = encode_text(ctx, model.text_encoder, " ".join(words))
    assert out.embeds.shape == (1, 154, 32) and len(out.token_ids) == 154
    tok = tiny_pipe.tokenizer
    assert out.token_ids[0] == out.token_ids[77] == tok.bos_token_id
    assert out.token_ids[76] == tok.eos_token_id
    first, _ = tiny_pipe.encode_prompt(" ".join(words[:75]), "cpu", 1, False)
    second, _ = tiny_pipe.encode_prompt("on a blue sky", "cpu", 1, False)
    assert torch.equal(out.embeds[:, :77], first) and torch.equal(out.embeds[:, 77:], second)


def test_emphasis_parsing() -> None:
    assert parse_emphasis("a red circle") == [("a red circle", 1.0)]
    assert parse_emphasis("a (red:1.5) circle") == [("a ", 1.0), ("red", 1.5), (" circle", 1.0)]
    assert parse_emphasis("((red))")[0][1] == pytest.approx(1.21)
    assert parse_emphasis("[red]")[0][1] == pytest.approx(1 / 1.1)
    assert parse_emphasis(r"\(literal\)") == [("(literal)", 1.0)]


def test_emphasis_scales_tokens_and_keeps_mean(ctx: Any, model: Any) -> None:
    plain = encode_text(ctx, model.text_encoder, "a red circle")
    neutral = encode_text(ctx, model.text_encoder, "a (red:1.0) circle")
    strong = encode_text(ctx, model.text_encoder, "a (red:1.5) circle")
    assert torch.equal(neutral.embeds, plain.embeds)
    assert strong.token_ids == plain.token_ids
    assert not torch.equal(strong.embeds, plain.embeds)
    # A1111 restores the mean after scaling; the mean is a small number (~6e-4 on the trained encoder)
    # summed from values of order 1, so compare it on the scale of the values, not relative to itself.
    scale = plain.embeds.abs().mean().item()
    assert strong.embeds.mean().item() == pytest.approx(plain.embeds.mean().item(), abs=1e-6 * scale)
    literal = encode_text(ctx, model.text_encoder, "a (red:1.5) circle", emphasis=False)
    assert len([i for i in literal.token_ids if i != literal.token_ids[-1]]) > 5  # brackets are tokens


def test_text_encoder_lora_equals_pipeline(ctx: Any, model: Any, tiny_pipe: Any, style_lora: Any) -> None:
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef("builtin:tinyworld-style"), 1.0, 0.7)
    tiny_pipe.load_lora_weights(str(style_lora), adapter_name="style")
    tiny_pipe.set_adapters(["style"], [{"unet": 1.0, "text_encoder": 0.7}])
    theirs, _ = tiny_pipe.encode_prompt("a blue square", "cpu", 1, False)
    ours = encode_text(ctx, patched.text_encoder, "a blue square")
    assert (ours.embeds - theirs).abs().max().item() == 0.0
    assert not torch.equal(ours.embeds, encode_text(ctx, model.text_encoder, "a blue square").embeds)
