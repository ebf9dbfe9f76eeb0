"""Prompt-to-prompt through the sampling loop: identity edits are exact, edits act, hooks compose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from nodegraph.api import InputError
from nodegraph_attention.capture import AttentionCapture
from nodegraph_attention.p2p import make_edit, pair_conditioning

SOURCE = "a red cat on the grass"


@pytest.fixture
def source(encode: Callable[[str], Any]) -> Any:
    return encode(SOURCE)


@pytest.mark.parametrize("options", [
    {"mode": "replace"},
    {"mode": "refine", "self_replace": 1.0},
    {"mode": "reweight", "reweight": {"cat": 1.0}},
    {"mode": "replace", "local_blend": ["cat"], "cross_replace_words": {"cat": 0.3}},
], ids=["replace", "refine", "reweight", "replace-local-blend"])
def test_identity_edit_reproduces_plain_image_exactly(tiny: dict[str, Any], source: Any,
                                                      sample: Callable[..., Any], options: dict[str, Any]) -> None:
    plain = sample(source)  # the source prompt alone, batch of one
    pair = pair_conditioning(source, source)
    edit = make_edit(tiny["tokenizer"], source, source, **options)
    out = sample(pair, (edit,))
    # both branches start from the source's noise (first draw of the same seed) ...
    assert torch.equal(out.latents[0], out.latents[1])
    # ... and match a plain run of the source up to batch-size rounding of CPU kernels (batch 4 vs 2)
    assert torch.allclose(out.latents[1], plain.latents[0], atol=1e-4)


def test_identity_edit_is_exact_against_the_same_batch_without_hooks(tiny: dict[str, Any], source: Any,
                                                                      sample: Callable[..., Any]) -> None:
    pair = pair_conditioning(source, source)
    same_noise = make_edit(tiny["tokenizer"], source, source, "replace", cross_replace=0.0, self_replace=0.0)
    reference = sample(pair, (same_noise,))  # no attention is touched: hooks never fire
    edit = make_edit(tiny["tokenizer"], source, source, "refine", cross_replace=1.0, self_replace=1.0,
                     local_blend=["cat"])
    out = sample(pair, (edit,))
    assert torch.equal(out.latents, reference.latents)


def test_edit_changes_only_the_edited_branch(tiny: dict[str, Any], source: Any, encode: Callable[[str], Any],
                                             sample: Callable[..., Any]) -> None:
    edited = encode("a red dog on the grass")
    pair = pair_conditioning(source, edited)
    tok = tiny["tokenizer"]
    unedited = sample(pair, (make_edit(tok, source, edited, "replace", cross_replace=0.0, self_replace=0.0),))
    out = sample(pair, (make_edit(tok, source, edited, "replace"),))
    assert torch.equal(out.latents[0], unedited.latents[0])  # the source renders untouched
    assert not torch.allclose(out.latents[1], out.latents[0], atol=1e-3)  # the prompt change shows
    # the injection acts: not the bare prompt change (a random tiny model shows no "structure kept")
    assert not torch.allclose(out.latents[1], unedited.latents[1], atol=1e-4)


def test_reweight_and_refine_act(tiny: dict[str, Any], source: Any, encode: Callable[[str], Any],
                                 sample: Callable[..., Any]) -> None:
    tok = tiny["tokenizer"]
    pair = pair_conditioning(source, source)
    louder = sample(pair, (make_edit(tok, source, source, "reweight", reweight={"red": 5.0}),))
    assert not torch.allclose(louder.latents[1], louder.latents[0], atol=1e-3)
    refined = encode("a red cat on the grass at night")
    out = sample(pair_conditioning(source, refined), (make_edit(tok, source, refined, "refine"),))
    assert not torch.allclose(out.latents[1], out.latents[0], atol=1e-3)


def test_local_blend_keeps_unmasked_latents_of_the_source(tiny: dict[str, Any], source: Any,
                                                         encode: Callable[[str], Any],
                                                         sample: Callable[..., Any]) -> None:
    edited = encode("a red dog on the grass")
    edit = make_edit(tiny["tokenizer"], source, edited, "replace", local_blend=["cat", "dog"],
                     blend_threshold=0.999)  # the tiny model attends almost uniformly
    out = sample(pair_conditioning(source, edited), (edit,))
    same = (out.latents[1] == out.latents[0]).all(dim=0)  # positions outside the mask are the source's
    assert 0 < int(same.sum()) < same.numel()


def test_composes_with_capture_and_residual_conditions(tiny: dict[str, Any], source: Any,
                                                       sample: Callable[..., Any]) -> None:
    before = dict(tiny["unet"].attn_processors)

    class Residual:  # a ControlNet-like condition: adds mid-block residuals each step
        def activate(self, setup: Any, ctx: Any) -> Any:
            return self

        def step_kwargs(self, step: Any) -> dict[str, Any]:
            return {"mid_block_additional_residual": torch.full((4, 64, 2, 2), 0.05)}

        def close(self) -> None:
            pass

    pair = pair_conditioning(source, source)
    tok = tiny["tokenizer"]
    noise_only = make_edit(tok, source, source, "replace", cross_replace=0.0, self_replace=0.0)
    reference = sample(pair, (noise_only, Residual()))
    edit = make_edit(tok, source, source, "replace", self_replace=1.0)
    for conditions in [(AttentionCapture(), edit, Residual()), (edit, Residual(), AttentionCapture())]:
        out = sample(pair, conditions)
        assert torch.equal(out.latents, reference.latents)
        assert out.extras["attention_maps"].maps.shape[0] == 2
        assert all(tiny["unet"].attn_processors[k] is v for k, v in before.items())


def test_restored_when_a_step_fails(tiny: dict[str, Any], source: Any, sample: Callable[..., Any]) -> None:
    before = dict(tiny["unet"].attn_processors)

    def fail(i: int) -> None:
        if i == 2:
            raise RuntimeError("step failed")

    edit = make_edit(tiny["tokenizer"], source, source, "replace")
    with pytest.raises(RuntimeError, match="step failed"):
        sample(pair_conditioning(source, source), (AttentionCapture(), edit), on_step=fail)
    assert all(tiny["unet"].attn_processors[k] is v for k, v in before.items())


def test_wrong_positive_is_a_teaching_error(tiny: dict[str, Any], source: Any, encode: Callable[[str], Any],
                                            sample: Callable[..., Any]) -> None:
    edit = make_edit(tiny["tokenizer"], source, source, "replace")
    with pytest.raises(InputError, match="positive"):
        sample(source, (edit,))
    with pytest.raises(InputError, match="pair"):
        other = encode("a blue dog")
        sample(pair_conditioning(other, other), (edit,))
