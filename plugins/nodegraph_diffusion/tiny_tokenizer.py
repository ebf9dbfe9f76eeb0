"""Our own small CLIP tokenizer: a word-level BPE vocabulary on top of CLIP's 512 byte symbols.

Why build one: no tokenizer files may come from a hub, and the tiny test model needs a tokenizer that
behaves exactly like CLIP's (same pre-tokenisation, `</w>` word ends, BOS/EOS, padding to 77) so that
code written against it works unchanged with real SD checkpoints.

How: every word of `WORDS` becomes one token. BPE applies merges by rank, so merges added for one word
could split another; we therefore *simulate* BPE: for each word we tokenize it with the merges so far and
append merges that join the resulting pieces left to right. New merges rank after all earlier ones, so
they never change how an earlier word is split (see DESIGN "Facts we measured"). Any other text still
tokenizes, down to single bytes (CLIP's byte-level fallback).

transformers 5 pitfall: `CLIPTokenizer(vocab_file=..., merges_file=...)` silently yields a 2-entry
vocabulary; load the written folder with `CLIPTokenizer.from_pretrained(folder)` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77

WORDS: tuple[str, ...] = (
    # scene and grammar
    "a", "an", "the", "in", "on", "of", "with", "and", "at", "to", "is", "wearing", "holding",
    "photo", "painting", "drawing", "sketch", "style", "picture", "image", "portrait", "scene",
    "background", "foreground", "sky", "grass", "ground", "floor", "wall", "water", "sun", "moon",
    "tree", "house", "road", "cloud", "night", "day",
    # colours and tones
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "black", "white", "gray", "grey",
    "brown", "cyan", "magenta", "gold", "silver", "dark", "light", "bright", "pale", "colorful",
    # shapes and sizes
    "circle", "square", "triangle", "star", "rectangle", "line", "lines", "dot", "dots", "ring", "box",
    "ball", "cube", "stripe", "stripes", "shape", "shapes", "big", "small", "large", "tiny", "two",
    "three", "one", "many",
    # people and clothing
    "person", "people", "man", "woman", "child", "girl", "boy", "face", "hair", "hand", "hands", "arm",
    "arms", "leg", "legs", "head", "body", "shirt", "dress", "hat", "pants", "jacket", "shoes",
    "standing", "sitting", "walking", "running", "dancing", "jumping", "pose", "raised",
    # animals and objects
    "dog", "cat", "bird", "fish", "car", "cup", "flower", "apple",
    # positions
    "left", "right", "top", "bottom", "center", "middle", "corner", "above", "below", "behind",
    # quality words people type
    "masterpiece", "quality", "best", "high", "low", "detailed", "blurry", "ugly", "bad", "good",
    "sharp", "soft", "smooth", "rough", "cartoon", "realistic", "watercolor", "pixel", "art",
)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) reversible byte -> printable unicode table: the 256 base symbols of the BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges by rank, the way CLIP's tokenizer does, to one word's symbols."""
    word = list(symbols)
    while len(word) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i)
                 for i, (a, b) in enumerate(zip(word, word[1:], strict=False))]
        best_rank, _ = min(pairs)
        if best_rank == 1 << 30:
            break
        first, second = next((word[i], word[i + 1]) for r, i in pairs if r == best_rank)
        merged: list[str] = []
        i = 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def build_vocab(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (token -> id) and ordered merges making each word of `words` a single token."""
    byte_symbols = list(bytes_to_unicode().values())
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        encoded = "".join(bytes_to_unicode()[b] for b in word.lower().encode("utf-8"))
        symbols = list(encoded[:-1]) + [encoded[-1] + "</w>"]
        pieces = _bpe(symbols, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab_list = byte_symbols + [s + "</w>" for s in byte_symbols]
    seen = set(vocab_list)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            vocab_list.append(a + b)
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_tokenizer(folder: Path, words: tuple[str, ...] = WORDS) -> dict[str, int]:
    """Write vocab.json, merges.txt and tokenizer_config.json (SD1.5's settings); returns the vocab."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return vocab
