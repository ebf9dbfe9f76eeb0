"""CLIP prompt encoding shared by the families: diffusers' exact short-prompt path, A1111's long prompts.

A plain prompt of up to 75 tokens takes exactly diffusers' `encode_prompt` path (same tokenizer call,
same layer choice), so results equal the pipelines' bit for bit. Longer prompts are split A1111-style
into 75-token chunks, each wrapped in BOS/EOS and padded to 77, encoded separately and concatenated
along the token axis. Emphasis (`(word:1.3)`, `(word)`, `[word]`) scales the token embeddings of the
marked words and restores each chunk's mean, as A1111 does.

`call` is how one encoder call turns token ids into embeddings: SD1.x's `run_encoder` (final layer
norm after a skipped layer) by default; a family with another rule (SDXL: hidden states from the
penultimate layer, no norm) passes its own. torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodegraph_diffusion.prompt_weights import has_emphasis, parse_emphasis

EncoderCall = Callable[[Any, Any, int, Any], Any]  # (encoder, input_ids, clip_skip, mask) -> embeds


def run_encoder(encoder: Any, input_ids: Any, clip_skip: int, attention_mask: Any = None) -> Any:
    """One text-encoder call, exactly as `StableDiffusionPipeline.encode_prompt` makes it.

    `clip_skip` counts final layers skipped (diffusers' meaning: 1 = penultimate layer, which A1111
    calls "CLIP skip 2"); the skipped output still goes through the final layer norm.
    """
    import torch

    device = next(encoder.parameters()).device
    mask = attention_mask.to(device) if attention_mask is not None else None
    with torch.no_grad():
        if clip_skip == 0:
            embeds = encoder(input_ids.to(device), attention_mask=mask)[0]
        else:
            hidden = encoder(input_ids.to(device), attention_mask=mask, output_hidden_states=True)[-1]
            embeds = getattr(encoder, "text_model", encoder).final_layer_norm(hidden[-(clip_skip + 1)])
    return embeds.to(dtype=encoder.dtype)


def _uses_mask(encoder: Any) -> bool:
    return bool(getattr(encoder.config, "use_attention_mask", False))


def encode_plain(tokenizer: Any, encoder: Any, text: str, clip_skip: int,
                 call: EncoderCall | None = None) -> tuple[Any, list[int]]:
    """diffusers' exact path for a prompt that fits one 77-token window."""
    inputs = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    mask = inputs.attention_mask if _uses_mask(encoder) else None
    return (call or run_encoder)(encoder, inputs.input_ids, clip_skip, mask), inputs.input_ids[0].tolist()


def encode_chunks(
    tokenizer: Any, encoder: Any, tokens: list[int], weights: list[float], clip_skip: int,
    call: EncoderCall | None = None,
) -> tuple[Any, list[int]]:
    """A1111's long-prompt path: 75-token chunks, BOS/EOS each, weights applied with mean restored."""
    import torch

    width = tokenizer.model_max_length - 2
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    pieces, all_ids = [], []
    for start in range(0, max(len(tokens), 1), width):
        chunk, chunk_w = tokens[start:start + width], weights[start:start + width]
        fill = width - len(chunk)
        ids = [bos, *chunk, eos] + [pad] * fill
        w = torch.tensor([1.0, *chunk_w, 1.0] + [1.0] * fill)
        input_ids = torch.tensor([ids])
        mask = (torch.tensor([[1] * (len(chunk) + 2) + [0] * fill])) if _uses_mask(encoder) else None
        z = (call or run_encoder)(encoder, input_ids, clip_skip, mask)
        if bool((w != 1.0).any()):
            original_mean = z.mean()
            z = z * w.to(z.device, z.dtype).reshape(1, -1, 1)
            z = z * (original_mean / z.mean())
        pieces.append(z)
        all_ids.extend(ids)
    return torch.cat(pieces, dim=1), all_ids


def encode_prompt(tokenizer: Any, encoder: Any, text: str, clip_skip: int = 0,
                  emphasis: bool = True, call: EncoderCall | None = None) -> tuple[Any, list[int]]:
    """(embeds (1, tokens, dim), token ids aligned with them) for one prompt."""
    if emphasis and has_emphasis(text):
        tokens: list[int] = []
        weights: list[float] = []
        for fragment, weight in parse_emphasis(text):
            ids = tokenizer(fragment, add_special_tokens=False, truncation=False, verbose=False).input_ids
            tokens.extend(ids)
            weights.extend([weight] * len(ids))
        return encode_chunks(tokenizer, encoder, tokens, weights, clip_skip, call)
    tokens = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    if len(tokens) <= tokenizer.model_max_length - 2:
        return encode_plain(tokenizer, encoder, text, clip_skip, call)
    return encode_chunks(tokenizer, encoder, tokens, [1.0] * len(tokens), clip_skip, call)


def empty_encoding(tokenizer: Any, encoder: Any, text: str, embeds: Any, clip_skip: int,
                   call: EncoderCall | None = None) -> Any:
    """The encoder's empty-prompt encoding (1, 77, dim), which the sampler pads shorter conditioning with.

    Kept only where padding can need it: an empty prompt is its own (no extra encoder call); a prompt
    longer than one chunk pays one extra call, so that a short prompt on the other side can borrow it
    (see cond_padding). A one-chunk non-empty prompt carries none and costs nothing extra.
    """
    if text == "":
        return embeds
    if int(embeds.shape[1]) > tokenizer.model_max_length:
        return encode_plain(tokenizer, encoder, "", clip_skip, call)[0]
    return None
