"""Make positive and negative conditioning the same length, so CFG can batch them in one UNet call.

A prompt over 75 tokens encodes to 154, 231, ... tokens (77 per chunk); the usual empty negative is
77. The UNet takes `[negative, positive]` as one batch, so the shorter one must be padded first.

We do what A1111 does with "Pad prompt/negative prompt to be same length" (`pad_cond_uncond` in
`sd_samplers_cfg_denoiser.py`): append whole 77-token chunks of the encoder's *empty-prompt* encoding
to the shorter side, `torch.cat([cond, empty.repeat(batch, n, 1)], dim=1)`. Why this choice:
- for the common case (long positive, empty negative) the padded negative is the empty encoding
  repeated, which is also exactly what ComfyUI produces (it repeats the shorter conditioning to the
  least common multiple) — and repeating every key/value of an attention leaves its output unchanged
  up to rounding, so the result equals running the two halves in separate UNet calls (A1111's
  unpadded mode) within fp32 rounding;
- padding goes at the end, so the positive's tokens keep their positions (attention capture and
  prompt-to-prompt read token positions);
- the lengths stay at the longer one (no LCM blow-up for 154 vs 231).
The empty encoding comes with the conditioning (`Conditioning.empty`, filled by `encode_text` for
empty and long prompts); a shorter side without one borrows the other side's.
"""

from __future__ import annotations

from typing import Any


class PaddingError(ValueError):
    """The two conditionings cannot be brought to one length (message says why and what to do)."""


def pad_with_empty(embeds: Any, length: int, empty: Any) -> Any:
    """`embeds` (B, n, dim) followed by whole chunks of `empty` (1, c, dim) up to `length` tokens."""
    import torch

    missing = length - int(embeds.shape[1])
    if missing == 0:
        return embeds
    chunk = int(empty.shape[1])
    if missing < 0 or missing % chunk:
        raise PaddingError(f"cannot pad {int(embeds.shape[1])} tokens to {length} with {chunk}-token chunks")
    if tuple(empty.shape[2:]) != tuple(embeds.shape[2:]):
        raise PaddingError(f"the empty-prompt encoding has width {tuple(empty.shape[2:])}, the conditioning "
                           f"{tuple(embeds.shape[2:])}: were they made by different text encoders?")
    pad = empty.to(device=embeds.device, dtype=embeds.dtype).repeat(int(embeds.shape[0]), missing // chunk, 1)
    return torch.cat([embeds, pad], dim=1)


def match_lengths(positive: Any, negative: Any, positive_empty: Any = None,
                  negative_empty: Any = None) -> tuple[Any, Any]:
    """(positive, negative) embeddings padded to the longer one's token count, A1111-style.

    Each side is padded with its own empty-prompt encoding, else the other side's; equal lengths
    come back unchanged (the same tensor objects).
    """
    n_pos, n_neg = int(positive.shape[1]), int(negative.shape[1])
    if n_pos == n_neg:
        return positive, negative
    short_is_negative = n_neg < n_pos
    own, other = (negative_empty, positive_empty) if short_is_negative else (positive_empty, negative_empty)
    empty = own if own is not None else other
    if empty is None:
        raise PaddingError(
            f"positive has {n_pos} tokens and negative {n_neg}, and neither carries the encoder's "
            "empty-prompt encoding to pad the shorter with: encode both with diffusion.encode_text"
        )
    if short_is_negative:
        return positive, pad_with_empty(negative, n_pos, empty)
    return pad_with_empty(positive, n_neg, empty), negative
