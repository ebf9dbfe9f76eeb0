"""Words ↔ CLIP tokens, and the token alignments prompt-to-prompt edits need.

Re-implements the semantics of google/prompt-to-prompt's `seq_aligner.py` and `ptp_utils.py` (HEAD
9c472e4; see tests/fixtures/p2p/README.md), with the same quirks, so its demo settings mean the same
thing here:
- words are the prompt split on single spaces; token positions are 1-based (0 is BOS);
- word swap ("replace") needs the same number of words and maps differing words token-to-token,
  splitting 1/n when a word has a different number of tokens (one deliberate difference: after the
  last swapped word upstream writes `mapper[j, j]`, which misaligns the rest of the prompt when the
  swapped words' token counts differ; we write `mapper[i, j]`, which is the same whenever they agree);
- refinement aligns the two token sequences globally (gap 0, match 1, mismatch -1, ties prefer a new
  target token, then a dropped source token, then a match);
- cross-attention replacement is on for steps [0, int(f * (num_steps + 1))) per token.
Pure functions over a Hugging Face tokenizer (`encode`, `add_special_tokens=False`); no torch modules.
"""

from __future__ import annotations

from typing import Any

import torch


def word_token_counts(tokenizer: Any, text: str) -> list[int]:
    """How many CLIP tokens each space-separated word of `text` becomes.

    CLIP's tokenizer splits on whitespace before BPE, so a prompt's tokens are its words' tokens in
    order; we check that against the whole prompt's encoding (truncation aside).
    """
    counts = [len(tokenizer.encode(w, add_special_tokens=False)) for w in text.split(" ")]
    total = len(tokenizer.encode(text, add_special_tokens=False))
    if sum(counts) != total:
        raise ValueError(f"cannot split prompt {text!r} into words: its tokens are not its words' tokens")
    return counts


def word_token_indices(tokenizer: Any, text: str, word: str | int, max_len: int = 77) -> list[int]:
    """Token positions (1-based, BOS = 0) of every word equal to `word` (or of the word at index `word`)."""
    words = text.split(" ")
    places = [word] if isinstance(word, int) else [i for i, w in enumerate(words) if w == word]
    counts = word_token_counts(tokenizer, text)
    out: list[int] = []
    start = 1
    for i, n in enumerate(counts):
        if i in places:
            out.extend(p for p in range(start, start + n) if p < max_len - 1)
        start += n
    return out


def replacement_mapper(tokenizer: Any, source: str, edited: str, max_len: int = 77) -> torch.Tensor:
    """(max_len, max_len) matrix M with edited-attention = source-attention @ M (word swap)."""
    words_x, words_y = source.split(" "), edited.split(" ")
    if len(words_x) != len(words_y):
        raise ValueError(
            f"word swap needs prompts with the same number of words: {source!r} has {len(words_x)}, "
            f"{edited!r} has {len(words_y)} (use mode 'refine' to add words)"
        )
    swapped = [i for i in range(len(words_y)) if words_y[i] != words_x[i]]
    src = [word_token_indices(tokenizer, source, i, max_len) for i in swapped]
    dst = [word_token_indices(tokenizer, edited, i, max_len) for i in swapped]
    if any(not s or not d for s, d in zip(src, dst, strict=True)):
        raise ValueError("a swapped word has no tokens (double space, or past the 77-token limit?)")
    mapper = torch.zeros(max_len, max_len)
    i = j = k = 0
    while i < max_len and j < max_len:
        if k < len(src) and src[k][0] == i:
            s, d = src[k], dst[k]
            if len(s) == len(d):
                mapper[s, d] = 1.0
            else:
                for t in d:
                    mapper[s, t] = 1.0 / len(d)
            k += 1
            i += len(s)
            j += len(d)
        else:
            mapper[i, j] = 1.0
            i += 1
            j += 1
    return mapper


def _global_align(x: list[int], y: list[int]) -> list[int]:
    """For each token of y, the index of the aligned token of x, or -1 for a new token."""
    gap, match, mismatch = 0, 1, -1
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    trace = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        score[0][j], trace[0][j] = j * gap, 1
    for i in range(1, n + 1):
        score[i][0], trace[i][0] = i * gap, 2
    trace[0][0] = 4
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left = score[i][j - 1] + gap
            up = score[i - 1][j] + gap
            diag = score[i - 1][j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            best = max(left, up, diag)
            score[i][j] = best
            trace[i][j] = 1 if best == left else 2 if best == up else 3
    mapping = [-1] * m
    i, j = n, m
    while (i > 0 or j > 0) and trace[i][j] != 4:
        if trace[i][j] == 3:
            i, j = i - 1, j - 1
            mapping[j] = i
        elif trace[i][j] == 1:
            j -= 1
        else:
            i -= 1
    return mapping


def refinement_mapper(
    tokenizer: Any, source: str, edited: str, max_len: int = 77
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper, alphas), both (max_len,): edited token k takes source column mapper[k] where alphas[k]=1."""
    x = tokenizer.encode(source)[:max_len]
    y = tokenizer.encode(edited)[:max_len]
    aligned = _global_align(x, y)
    alphas = torch.ones(max_len)
    mapper = torch.zeros(max_len, dtype=torch.int64)
    alphas[: len(y)] = torch.tensor([float(a != -1) for a in aligned])
    mapper[: len(y)] = torch.tensor(aligned, dtype=torch.int64)
    mapper[len(y):] = len(y) + torch.arange(max_len - len(y))
    return mapper, alphas


def cross_replace_ends(
    tokenizer: Any, edited: str, default: float, per_word: dict[str, float], max_len: int = 77
) -> torch.Tensor:
    """(max_len,) end fraction of cross-attention replacement per edited-prompt token."""
    ends = torch.full((max_len,), float(default))
    for word, end in per_word.items():
        inds = word_token_indices(tokenizer, edited, word, max_len)
        ends[inds] = float(end)
    return ends


def cross_replace_alpha(ends: torch.Tensor, num_steps: int) -> torch.Tensor:
    """(num_steps + 1, max_len) 0/1 schedule: token k is replaced at steps < int(ends[k] * (num_steps+1))."""
    rows = num_steps + 1
    stop = torch.tensor([int(float(e) * rows) for e in ends])
    return (torch.arange(rows)[:, None] < stop[None, :]).float()


def equalizer(tokenizer: Any, edited: str, weights: dict[str, float], max_len: int = 77) -> torch.Tensor:
    """(max_len,) attention scale per edited-prompt token: 1 except the chosen words' tokens."""
    eq = torch.ones(max_len)
    for word, value in weights.items():
        eq[word_token_indices(tokenizer, edited, word, max_len)] = float(value)
    return eq
