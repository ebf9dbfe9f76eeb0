"""Textual inversion: `diffusion.load_embedding` adds an embedding file to a text encoder handle.

The handle only records the file (path, fingerprint, the prompt word); the encoder reads it when
`diffusion.encode_text` runs (embeddings.py), so adding an embedding never reloads the text encoder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion.paths import EmbeddingRef
from nodegraph_diffusion.types import EmbeddingPatch, TextEncoderHandle

SUFFIXES = (".safetensors", ".pt", ".bin")


@node("diffusion.load_embedding", version="1.0.0")
def load_embedding(
    ctx: NodeContext,
    encoder: Annotated[TextEncoderHandle, Field(description="Text encoder to add the embedding to "
                                                            "(diffusion.load_model's text_encoder)")],
    path: Annotated[EmbeddingRef, Field(description="Embedding file: A1111 .safetensors (emb_params) or .pt "
                                                    "(string_to_param), diffusers learned_embeds.safetensors "
                                                    "/ .bin; searched in --models DIR/embeddings; pickled "
                                                    "files only with --allow-pickle")],
    token: Annotated[str | None, Field(min_length=1, description="The word that stands for it in prompts "
                                                                 "(unset: a diffusers file's own token, "
                                                                 "else the file name without extension, "
                                                                 "as A1111 names them)")] = None,
) -> TextEncoderHandle:
    """Add a textual-inversion embedding to a text encoder: its word in a prompt becomes its vectors.

    Several embeddings stack (chain the nodes). Prompts then encode as after diffusers'
    `load_textual_inversion(file, token=...)`; SD1.x models only for now."""
    from nodegraph_diffusion.loading import read_state_dict, refuse_pickle
    from nodegraph_diffusion.paths import fingerprint_path, resolve_model_ref

    file = resolve_model_ref(str(path), ctx, kind="embedding")
    if file.is_dir() or file.suffix.lower() not in SUFFIXES:
        raise InputError(f"'{file}' is not an embedding file ({', '.join(SUFFIXES)})", field="path")
    refuse_pickle(Path(file), ctx)
    if encoder.source.family != "sd1":
        raise InputError(f"textual-inversion embeddings work on SD1.x text encoders for now, not "
                         f"{encoder.source.family!r} ones", field="encoder")
    if token is None:
        state = read_state_dict(Path(file), ctx)
        keys = [k for k in state if k not in ("emb_params", "string_to_param", "name", "string_to_token",
                                               "step", "sd_checkpoint", "sd_checkpoint_name")]
        name = state.get("name") if isinstance(state.get("name"), str) else None
        token = keys[0] if len(state) == 1 and keys else name or file.stem
    taken = {p.token for p in encoder.embeddings}
    if token in taken:
        raise InputError(f"the encoder already has an embedding for the word {token!r}: give this one "
                         "another `token`", field="token")
    patch = EmbeddingPatch(str(file.resolve()), fingerprint_path(file), token)
    return replace(encoder, embeddings=(*encoder.embeddings, patch))
