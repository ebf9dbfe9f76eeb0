"""The SD1.x CLIP tokenizer, built from CLIP's own BPE merges shipped with nodegraph (MIT, OpenAI).

Why: an A1111/ComfyUI SD1.5 `.safetensors` holds the text encoder's weights but no vocabulary, and
nodegraph never fetches from a hub. CLIP's merges file (`clip_vocab/bpe_simple_vocab_16e6.txt.gz`,
licence beside it) is all a CLIP tokenizer needs: the vocabulary is derived from it exactly as
OpenAI's / open_clip's `SimpleTokenizer` derives its encoder — the 256 byte symbols, the same with
`</w>`, one entry per merge (the first 48,894 lines after the header), then the two special tokens —
which is also, entry for entry, the `vocab.json`/`merges.txt` of SD1.5's `tokenizer/` folder (ids
49406 `<|startoftext|>`, 49407 `<|endoftext|>`, pad = `<|endoftext|>`, 77 tokens).

The tokenizer is transformers' `CLIPTokenizer` (the `tokenizers`-backed one diffusers uses), so it
behaves as SD1.5's shipped tokenizer does under transformers 5: it has no ftfy path, so its ids do not
depend on whether ftfy is installed. It differs from open_clip only where open_clip's `basic_clean`
rewrites the text first (ftfy fixes such as curly quotes -> straight, HTML entities unescaped).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny_tokenizer import bytes_to_unicode

BPE_FILE = Path(__file__).parent / "clip_vocab" / "bpe_simple_vocab_16e6.txt.gz"
# shipped configs whose tokenizers are CLIP's, built from the shipped merges (single files carry none):
# tokenizer component -> pad token (SDXL's and SD3's tokenizer_2 pad with "!", id 0; the others with EOS)
_EOS = "<|endoftext|>"
_CLIP_G_PADS = {"tokenizer": _EOS, "tokenizer_2": "!"}
CLIP_TOKENIZER_PADS = {"sd15": {"tokenizer": _EOS}, "sdxl": _CLIP_G_PADS, "sdxl_refiner": _CLIP_G_PADS,
                       "flux-dev": {"tokenizer": _EOS}, "flux-schnell": {"tokenizer": _EOS},
                       "sd35-medium": _CLIP_G_PADS, "sd35-large": _CLIP_G_PADS}
MERGE_COUNT = 49152 - 256 - 2  # merges CLIP uses: vocab 49408 = 512 byte symbols + merges + 2 specials
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def read_merges(path: Path = BPE_FILE) -> list[tuple[str, str]]:
    """The merges CLIP uses, in rank order (the file's header line skipped, as SimpleTokenizer does)."""
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1:MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise ValueError(f"'{path}' is not CLIP's BPE merges file ({len(merges)} merges read)")
    return merges  # type: ignore[return-value]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """token -> id, in SimpleTokenizer's order, with SD1.5's names for the two special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def sd15_clip_tokenizer(path: Path = BPE_FILE, pad_token: str = EOS) -> Any:
    """SD1.x's CLIP tokenizer (transformers `CLIPTokenizer`), built in memory from the shipped merges.

    `pad_token="!"` gives SDXL's `tokenizer_2` (OpenCLIP bigG pads with id 0, "!"); the same
    vocabulary and merges otherwise, so SDXL's `tokenizer` is the default one."""
    from transformers import CLIPTokenizer

    merges = read_merges(path)
    return CLIPTokenizer(vocab=clip_vocab(merges), merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS,
                         pad_token=pad_token, model_max_length=MAX_LENGTH)


def save_sd15_tokenizer(folder: Path) -> Path:
    """Write it as a tokenizer folder (vocab.json, merges.txt, configs), e.g. for other tools."""
    folder.mkdir(parents=True, exist_ok=True)
    sd15_clip_tokenizer().save_pretrained(folder)
    return folder
