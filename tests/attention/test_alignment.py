"""Word/token alignment against the prompt-to-prompt reference semantics (tests/fixtures/p2p/README.md)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodegraph_attention import alignment


def test_word_indices_are_one_based_and_cover_multi_token_words(tiny: dict[str, Any]) -> None:
    tok = tiny["tokenizer"]
    text = "a painting of a squirrel eating a burger"  # "squirrel" is not in the tiny vocabulary
    counts = alignment.word_token_counts(tok, text)
    assert counts[:4] == [1, 1, 1, 1] and counts[4] > 1
    assert alignment.word_token_indices(tok, text, "painting") == [2]
    assert alignment.word_token_indices(tok, text, "squirrel") == list(range(5, 5 + counts[4]))
    assert alignment.word_token_indices(tok, text, "a") == [1, 4, 5 + counts[4] + counts[5]]
    assert alignment.word_token_indices(tok, text, 1) == [2]


def test_replacement_mapper_swaps_words_and_splits_uneven_tokens(tiny: dict[str, Any]) -> None:
    tok = tiny["tokenizer"]
    same = alignment.replacement_mapper(tok, "a red cat", "a red dog")
    assert torch.equal(same, torch.eye(77))  # one-token words: identity (columns follow source)
    uneven = alignment.replacement_mapper(tok, "a squirrel eating", "a cat eating")
    n = len(alignment.word_token_indices(tok, "a squirrel eating", "squirrel"))
    assert torch.equal(uneven[2:2 + n, 2], torch.ones(n))  # all squirrel tokens -> the one cat token
    assert uneven[2 + n, 3] == 1  # "eating" stays aligned after the swap
    assert torch.allclose(uneven.sum(0)[:4], torch.tensor([1.0, 1.0, float(n), 1.0]))
    with pytest.raises(ValueError, match="same number of words"):
        alignment.replacement_mapper(tok, "soup", "pea soup")


def test_refinement_mapper_keeps_source_columns_for_shared_tokens(tiny: dict[str, Any]) -> None:
    tok = tiny["tokenizer"]
    mapper, alphas = alignment.refinement_mapper(tok, "a photo of a house", "a red photo of a house at night")
    assert mapper[:10].tolist() == [0, 1, -1, 2, 3, 4, 5, -1, -1, 6]
    assert alphas[:10].tolist() == [1, 1, 0, 1, 1, 1, 1, 0, 0, 1]
    assert mapper[10:].tolist() == list(range(10, 77))
    ident, ones = alignment.refinement_mapper(tok, "a red cat", "a red cat")
    assert torch.equal(ident, torch.arange(77)) and torch.equal(ones, torch.ones(77))


def test_cross_replace_schedule_uses_steps_plus_one(tiny: dict[str, Any]) -> None:
    ends = alignment.cross_replace_ends(tiny["tokenizer"], "a red dog", 0.8, {"dog": 0.4})
    alpha = alignment.cross_replace_alpha(ends, 50)
    assert alpha.shape == (51, 77)
    assert alpha[:, 1].sum() == 40 and alpha[39, 1] == 1 and alpha[40, 1] == 0  # int(0.8 * 51) = 40
    assert alpha[:, 3].sum() == 20  # "dog": int(0.4 * 51) = 20


def test_equalizer_scales_chosen_words_only(tiny: dict[str, Any]) -> None:
    eq = alignment.equalizer(tiny["tokenizer"], "pink bear riding a bicycle", {"pink": -1.0})
    assert eq[1] == -1 and (eq[2:] == 1).all() and eq[0] == 1
