"""The shipped SD1.x CLIP tokenizer == open_clip's own `SimpleTokenizer`, id for id, on a prompt corpus.

The reference is open_clip's `tokenizer.py`, loaded by file path from an installed open-clip-torch
(installed with `pip install --no-deps open-clip-torch`: the full package would replace torch; the
file itself needs only ftfy, regex, numpy and torch). Nothing comes from a hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from nodegraph_diffusion.clip_tokenizer import (
    BPE_FILE,
    MERGE_COUNT,
    clip_vocab,
    read_merges,
    sd15_clip_tokenizer,
)

CORPUS = [
    "a photo of a cat",
    "",
    "(masterpiece:1.2), ((best quality)), [blurry], (red:0.8) \\(literal\\) [[low]] {curly} <lora:x:0.5>",
    "a cat!!! on a mat... (really?) yes; no: maybe - 'quoted' \"double\" / slash \\ back_slash #tag @user",
    "café crème brûlée, naïve façade, Ångström, São Paulo, Zürich, ÉCOLE",
    "東京の夜景, 서울, Привет мир, مرحبا, שלום, ελληνικά, हिन्दी",
    "🐱 cat with 🌈 rainbow 👍🏽 and 👨‍👩‍👧 family ❤️ ★ ☃",
    "1girl, 2boys, 1024x768, 3.14159, 1,000,000, 50%, $20, 4k, 8K UHD, v1.5, 2024-01-31",
    "A RED Circle In The CENTER, BluE BackGround, iPhone, McDonald's",
    "a   red\t\tcircle\n\nblue  background   ",
    "don't won't it's we're they've I'm you'll he'd DON'T",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilistic",
    "ultra-detailed, hyper_realistic, 35mm f/1.8, bokeh++, photo--realistic, a.b.c, x=y+z*2^3",
    ("a big red circle in the center of a wide blue sky, with three small green triangles, a yellow "
     "square, many tiny purple dots, soft shadows, studio lighting, sharp focus, ") * 4,  # > 77 tokens
]
# where open_clip's basic_clean rewrites the text first (ftfy: curly quotes; html entities) the ids differ
CLEANED_BY_OPEN_CLIP = [
    "“curly” ‘quotes’ and &amp; entities &lt;b&gt; &quot;x&quot;",
    "ﬁne ligature, ＦＵＬＬ width",
]


def _open_clip_tokenizer_module() -> Any:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        pytest.skip("open-clip-torch is not installed (pip install --no-deps open-clip-torch ftfy)")
    pytest.importorskip("ftfy")
    path = Path(spec.origin).parent / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer_reference", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> Any:
    return _open_clip_tokenizer_module()


@pytest.fixture(scope="module")
def simple(reference: Any) -> Any:
    return reference.SimpleTokenizer()


@pytest.fixture(scope="module")
def ours() -> Any:
    return sd15_clip_tokenizer()


def test_vocabulary_is_open_clips_encoder(simple: Any) -> None:
    vocab = clip_vocab(read_merges())
    assert len(vocab) == len(simple.encoder) == 49408
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    assert vocab == {renamed.get(k, k): v for k, v in simple.encoder.items()}
    assert len(read_merges()) == MERGE_COUNT == len(simple.bpe_ranks)


def test_shipped_file_is_open_clips(reference: Any) -> None:
    assert BPE_FILE.read_bytes() == Path(reference.default_bpe()).read_bytes()


@pytest.mark.parametrize("text", CORPUS)
def test_ids_equal_open_clip(ours: Any, simple: Any, reference: Any, text: str) -> None:
    expected = simple.encode(text)
    assert ours(text, add_special_tokens=False, truncation=False).input_ids == expected
    # the 77-token window the pipelines feed the encoder: BOS + ids, truncated with EOS last
    window = reference.tokenize([text])[0].tolist()
    got = ours(text, padding="max_length", max_length=77, truncation=True).input_ids
    n = min(len(expected) + 2, 77)
    assert got[:n] == window[:n]
    assert got[n:] == [49407] * (77 - n)  # SD1.5 pads with <|endoftext|>; open_clip pads with 0


def test_special_ids_and_well_known_prompt(ours: Any) -> None:
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.model_max_length) == (
        49406, 49407, 49407, 77)
    assert ours("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("text", CLEANED_BY_OPEN_CLIP)
def test_difference_is_only_open_clips_text_cleaning(ours: Any, simple: Any, reference: Any,
                                                     text: str) -> None:
    assert ours(text, add_special_tokens=False).input_ids != simple.encode(text)
    cleaned = reference.basic_clean(text)
    assert ours(cleaned, add_special_tokens=False).input_ids == simple.encode(text)


def test_saved_folder_loads_back_identically(ours: Any, tmp_path: Path) -> None:
    from nodegraph_diffusion.clip_tokenizer import save_sd15_tokenizer
    from transformers import CLIPTokenizer

    again = CLIPTokenizer.from_pretrained(save_sd15_tokenizer(tmp_path / "tokenizer"))
    for text in CORPUS:
        assert again(text, truncation=False).input_ids == ours(text, truncation=False).input_ids
