"""Textual-inversion embeddings: read the file, add its tokens to a copy of the tokenizer, and give the
text encoder the extra rows of its token-embedding matrix for the duration of one encoding.

Reading and token naming are diffusers' own (`TextualInversionLoaderMixin._retrieve_tokens_and_embeddings`,
`_extend_tokens_and_embeddings`, `_maybe_convert_prompt`), so a prompt encodes exactly as after
`pipe.load_textual_inversion(file, token=...)`: a multi-vector embedding `<cat>` becomes the tokens
`<cat> <cat>_1 ...`, appended to the vocabulary in file order. Unlike the pipeline, nothing shared is
mutated: the resident tokenizer is copied, and the encoder's embedding module is swapped only inside
`applied()` (restored on exit, also on error), so other nodes keep seeing the plain encoder.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.types import EmbeddingPatch

SDXL_KEYS = ("clip_l", "clip_g")
# SDXL text-encoder component -> its tensor in an SDXL embedding file (A1111/diffusers layout)
SDXL_PARTS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


def read_vectors(patch: EmbeddingPatch, ctx: NodeContext, tokenizer: Any, field: str = "encoder",
                 part: str | None = None) -> tuple[list[str], list[Any]]:
    """The tokens (`tok`, `tok_1`, ...) and one vector per token the file adds, as diffusers names them.

    `part` (`clip_l`/`clip_g`) picks one encoder's tensor of an SDXL file, which is what an SDXL user
    passes to `load_textual_inversion(state_dict[part], token=..., text_encoder=..., tokenizer=...)`."""
    from diffusers.loaders.textual_inversion import TextualInversionLoaderMixin as TI

    from nodegraph_diffusion.loading import read_state_dict

    state = read_state_dict(Path(patch.path), ctx, field=field)
    if part is not None:
        if part not in state:
            raise InputError(f"'{patch.path}' has no '{part}' tensor: an SDXL embedding holds clip_l and "
                             "clip_g (one per text encoder)", field=field)
        state = {patch.token: state[part]}
    elif "emb_params" in state:  # A1111 .safetensors: one tensor (vectors, dim); the token is the file's name
        state = {patch.token: state["emb_params"]}
    try:
        tokens, vectors = TI._retrieve_tokens_and_embeddings([patch.token], [state], tokenizer)
        return TI._extend_tokens_and_embeddings(tokens, vectors, tokenizer)
    except ValueError as exc:  # a token already in the vocabulary, an unknown layout
        raise InputError(f"embedding '{patch.path}': {exc}", field=field) from exc


def convert_prompt(tokenizer: Any, text: str) -> str:
    """diffusers' multi-vector prompt rewrite: `<cat>` -> `<cat> <cat>_1 ...` for the added tokens."""
    from diffusers.loaders.textual_inversion import TextualInversionLoaderMixin

    return str(TextualInversionLoaderMixin._maybe_convert_prompt(None, text, tokenizer))


@contextmanager
def applied(ctx: NodeContext, tokenizer: Any, encoder: Any, patches: tuple[EmbeddingPatch, ...],
            part: str | None = None) -> Iterator[Any]:
    """A tokenizer copy knowing the patches' tokens; inside the block the encoder embeds them too
    (`part`: which tensor of SDXL files this encoder takes)."""
    import torch

    tok = copy.deepcopy(tokenizer)
    table = encoder.get_input_embeddings()
    weight = table.weight.detach()
    rows: list[tuple[int, Any]] = []
    for patch in patches:
        tokens, vectors = read_vectors(patch, ctx, tok, part=part)
        for token, vector in zip(tokens, vectors, strict=True):
            if int(vector.shape[-1]) != int(weight.shape[-1]):
                raise InputError(f"embedding '{patch.path}' has vectors of width {int(vector.shape[-1])}; "
                                 f"this text encoder's are {int(weight.shape[-1])} (an embedding for another "
                                 "model)", field="encoder")
            tok.add_tokens(token)
            rows.append((int(tok.convert_tokens_to_ids(token)), vector))
    size = max([int(weight.shape[0]), *(i + 1 for i, _ in rows)])
    grown = torch.zeros(size, weight.shape[1], dtype=weight.dtype, device=weight.device)
    grown[: weight.shape[0]] = weight
    for index, vector in rows:
        grown[index] = vector.to(dtype=weight.dtype, device=weight.device)
    encoder.set_input_embeddings(torch.nn.Embedding.from_pretrained(grown, freeze=True))
    try:
        yield tok
    finally:
        encoder.set_input_embeddings(table)
