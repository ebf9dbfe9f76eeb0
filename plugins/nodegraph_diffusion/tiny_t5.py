"""A tiny T5 text encoder and its T5 tokenizer, built in-process (no hub file), for SD3 and Flux tests.

SD3/SD3.5 and Flux.1 read prompts with Google's T5-v1.1-XXL encoder as well as CLIP. No tokenizer file
may come from a hub, so the tests build a T5 tokenizer here that behaves like T5's own in every way the
pipelines rely on, and a random `T5EncoderModel` of the same architecture (v1.1: gated-GELU feed
forward, relative position buckets, no absolute positions), only 32 wide.

How a prompt becomes ids (a `tokenizers` Unigram model wrapped in `T5TokenizerFast`, as T5's real
SentencePiece model is):
- the text is lower-cased, split on whitespace, and each word gets T5's word-start mark `▁` (Metaspace);
- ids 0, 1, 2 are `<pad>`, `</s>`, `<unk>`, as in T5's real vocabulary;
- each word of the tiny CLIP tokenizer's `WORDS` (tiny_tokenizer.py) is one piece `▁word`, id
  `3 + its index in WORDS` (so "a red circle" is `[3, 41, 62, 1]` with the default words); Unigram picks
  it over any split because a whole word scores -1 and each character piece -10;
- any other word becomes `▁` (id `3 + len(WORDS)`) followed by its characters, one piece each (a-z,
  0-9, punctuation, in `CHARACTERS` order after it); a character outside that table is `<unk>`;
- `</s>` (id 1) is appended, then `<pad>` (id 0) pads to the length asked (the pipelines pad to
  `max_sequence_length`: Flux 512, SD3 256). `model_max_length` is 512, T5-XXL's.

The encoder's width is a parameter (`d_model`): it is the width of the T5 conditioning the transformer
reads (Flux's `joint_attention_dim`; SD3 pads CLIP to it). A diffusers folder names the components
`text_encoder_2`/`tokenizer_2` for Flux and `text_encoder_3`/`tokenizer_3` for SD3 (`COMPONENTS`);
`save_t5` writes them in that layout, loadable offline with `from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny_tokenizer import WORDS

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
WORD_START = "\u2581"  # "▁", SentencePiece's word-start mark
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789,.!?:;'\"()-_/+=&%#*"
MAX_LENGTH = 512  # T5-XXL's model_max_length (what the Flux pipeline pads to by default)
WORD_SCORE, CHAR_SCORE = -1.0, -10.0

# diffusers folder component names (encoder, tokenizer) of the T5 encoder, per model family
COMPONENTS: dict[str, tuple[str, str]] = {"flux": ("text_encoder_2", "tokenizer_2"),
                                          "sd3": ("text_encoder_3", "tokenizer_3")}

# T5-v1.1's architecture in miniature (as diffusers' own tests' tiny random T5): 32 wide, 4 heads of 8
T5_CONFIG: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
    "is_encoder_decoder": False,
    "use_cache": False,
}


def t5_vocab(words: tuple[str, ...] = WORDS) -> list[tuple[str, float]]:
    """The Unigram vocabulary (piece, score) in id order: specials, whole words, `▁`, characters."""
    seen: set[str] = set()
    pieces: list[tuple[str, float]] = [(PAD, 0.0), (EOS, 0.0), (UNK, 0.0)]
    for word in words:
        piece = WORD_START + word.lower()
        if piece not in seen:  # a repeated word would shift every later id: keep the first
            seen.add(piece)
            pieces.append((piece, WORD_SCORE))
    pieces.append((WORD_START, CHAR_SCORE))
    pieces += [(c, CHAR_SCORE) for c in CHARACTERS]
    return pieces


def build_t5_tokenizer(words: tuple[str, ...] = WORDS, max_length: int = MAX_LENGTH) -> Any:
    """A `T5TokenizerFast` over `t5_vocab(words)` (see the module docstring for how words map to ids)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram(t5_vocab(words), unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=WORD_START, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}",
                                                       special_tokens=[(EOS, 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=UNK, extra_ids=0,
                           model_max_length=max_length)


def build_tiny_t5(seed: int = 0, vocab_size: int | None = None, **config: Any) -> Any:
    """A random `T5EncoderModel` (eval mode) whose weights depend only on `seed`; `config` overrides
    `T5_CONFIG` (e.g. `d_model=64` for a transformer that reads wider T5 states)."""
    import torch
    from transformers import T5Config, T5EncoderModel

    from nodegraph_diffusion.tiny import _init_

    size = len(t5_vocab()) if vocab_size is None else vocab_size
    model = T5EncoderModel(T5Config(**{**T5_CONFIG, **config}, vocab_size=size, pad_token_id=0,
                                    eos_token_id=1, decoder_start_token_id=0))
    _init_(model, torch.Generator("cpu").manual_seed(seed))
    return model.eval()


def save_t5(folder: Path, family: str = "flux", seed: int = 0, **config: Any) -> tuple[Path, Path]:
    """Write a tiny T5 encoder and its tokenizer into a diffusers model folder, under the component
    names of `family` (`COMPONENTS`); returns (encoder folder, tokenizer folder)."""
    encoder_name, tokenizer_name = COMPONENTS[family]
    encoder_dir, tokenizer_dir = Path(folder) / encoder_name, Path(folder) / tokenizer_name
    build_tiny_t5(seed, **config).save_pretrained(encoder_dir, safe_serialization=True)
    build_t5_tokenizer().save_pretrained(tokenizer_dir)
    return encoder_dir, tokenizer_dir
