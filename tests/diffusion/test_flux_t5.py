"""The tiny T5 (tiny_t5.py) that SD3 and Flux tests share: ids as its docstring says, offline round trip."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_words_are_one_id_each_and_other_text_splits_into_characters() -> None:
    from nodegraph_diffusion.tiny_t5 import CHARACTERS, build_t5_tokenizer
    from nodegraph_diffusion.tiny_tokenizer import WORDS

    tok = build_t5_tokenizer()

    def word(w: str) -> int:
        return 3 + WORDS.index(w)

    assert tok("a red circle").input_ids == [word("a"), word("red"), word("circle"), 1]
    assert tok("A RED").input_ids == [word("a"), word("red"), 1]  # lower-cased first
    start = 3 + len(WORDS)
    char = start + 1 + CHARACTERS.index("z")
    assert tok("zz").input_ids == [start, char, char, 1]
    assert tok("\u00e9").input_ids == [start, 2, 1]  # outside the table: <unk>
    padded = tok("a", padding="max_length", max_length=5).input_ids
    assert padded == [word("a"), 1, 0, 0, 0]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.model_max_length) == (0, 1, 2, 512)


def test_saved_folder_reloads_offline_to_the_same_encoder(tmp_path: Path) -> None:
    import torch
    from nodegraph_diffusion.tiny_t5 import build_t5_tokenizer, build_tiny_t5, save_t5
    from transformers import T5EncoderModel, T5TokenizerFast

    encoder_dir, tokenizer_dir = save_t5(tmp_path, "flux", seed=3, d_model=48)
    assert (encoder_dir.name, tokenizer_dir.name) == ("text_encoder_2", "tokenizer_2")
    tok = T5TokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
    model = T5EncoderModel.from_pretrained(encoder_dir, local_files_only=True)
    ids = tok("a blue square, red background", padding="max_length", max_length=12,
              return_tensors="pt").input_ids
    assert ids.tolist() == build_t5_tokenizer()("a blue square, red background", padding="max_length",
                                                max_length=12, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        reloaded, fresh = model(ids)[0], build_tiny_t5(3, d_model=48)(ids)[0]
        other_seed = build_tiny_t5(4, d_model=48)(ids)[0]
    assert reloaded.shape == (1, 12, 48)
    assert torch.equal(reloaded, fresh)
    assert not torch.allclose(reloaded, other_seed)  # the seed decides the weights
