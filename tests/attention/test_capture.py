"""Attention-map capture: read-only, restored, averaged per token, carried in the sampler output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from nodegraph_attention.alignment import word_token_indices
from nodegraph_attention.capture import AttentionCapture, AttentionMaps


def test_capture_changes_nothing_and_restores_processors(tiny: dict[str, Any], encode: Callable[[str], Any],
                                                         sample: Callable[..., Any]) -> None:
    before = dict(tiny["unet"].attn_processors)
    prompt = encode("a red cat on the grass")
    plain = sample(prompt)
    captured = sample(prompt, (AttentionCapture(),))
    assert torch.equal(plain.latents, captured.latents)  # capture is read-only, bit for bit
    after = tiny["unet"].attn_processors
    assert all(after[k] is v for k, v in before.items())
    assert plain.extras == {}


def test_maps_are_per_token_averages_of_probabilities(tiny: dict[str, Any], encode: Callable[[str], Any],
                                                      sample: Callable[..., Any]) -> None:
    text = "a red cat on the grass"
    result = sample(encode(text), (AttentionCapture(key="maps"),), steps=4)
    maps = result.extras["maps"]
    assert isinstance(maps, AttentionMaps)
    assert maps.maps.shape == (1, 77, 8, 8)  # largest cross-attention level of the tiny UNet (64 px)
    assert maps.layers == 4 * 4  # 4 cross-attention layers x 4 steps
    # softmax rows sum to one, and averaging keeps that: every position's token weights sum to 1
    assert torch.allclose(maps.maps.sum(dim=1), torch.ones(1, 8, 8), atol=1e-5)
    tok = tiny["tokenizer"]
    red, cat = (maps.maps[0, word_token_indices(tok, text, w)].sum(0) for w in ("red", "cat"))
    assert not torch.allclose(red / red.sum(), cat / cat.sum(), atol=1e-6)  # words attend differently


def test_resolution_filter_and_step_window(encode: Callable[[str], Any], sample: Callable[..., Any]) -> None:
    low = sample(encode("a red cat"), (AttentionCapture(resolutions=(4,), start=0.5),), steps=4)
    maps = low.extras["attention_maps"]
    assert maps.maps.shape[-2:] == (4, 4) and maps.layers == 1 * 2  # mid block only, last 2 steps


def test_processors_restored_when_sampling_fails(tiny: dict[str, Any], encode: Callable[[str], Any],
                                                 sample: Callable[..., Any]) -> None:
    before = dict(tiny["unet"].attn_processors)

    def fail(i: int) -> None:
        if i == 1:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        sample(encode("a cat"), (AttentionCapture(),), on_step=fail)
    assert all(tiny["unet"].attn_processors[k] is v for k, v in before.items())
