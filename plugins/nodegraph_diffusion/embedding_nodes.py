"""Textual inversion: `diffusion.load_embedding` adds an embedding file to a text encoder handle.

The handle only records the file (path, fingerprint, the prompt word); the encoder reads it when
`diffusion.encode_text` runs (embeddings.py), so adding an embedding never reloads the text encoder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion.embeddings import SDXL_KEYS
from nodegraph_diffusion.paths import EmbeddingRef
from nodegraph_diffusion.types import EmbeddingPatch, TextEncoderHandle

SUFFIXES = (".safetensors", ".pt", ".bin")
FAMILIES = ("sd1", "sdxl")
# keys of A1111 files that are not a token's vectors
A1111_KEYS = ("emb_params", "string_to_param", "name", "string_to_token", "step", "sd_checkpoint",
              "sd_checkpoint_name", *SDXL_KEYS)


def _own_token(state: dict[str, Any], file: Path) -> str:
    """A diffusers file's one token, else the A1111 `name`, else the file name (as A1111 names them)."""
    keys = [k for k in state if k not in A1111_KEYS]
    name = state.get("name") if isinstance(state.get("name"), str) else None
    return keys[0] if len(state) == 1 and keys else name or file.stem


def _check_layout(state: dict[str, Any], family: str, file: Path) -> None:
    """An SDXL file (clip_l + clip_g, one tensor per encoder) fits SDXL encoders only, and only it does."""
    sdxl_file = any(k in state for k in SDXL_KEYS)
    if sdxl_file and family != "sdxl":
        raise InputError(f"'{file}' is an SDXL embedding (clip_l/clip_g tensors, widths "
                         f"{', '.join(str(tuple(state[k].shape)) for k in SDXL_KEYS if k in state)}); this "
                         f"is an {family} text encoder: use an embedding trained for it", field="path")
    if family == "sdxl" and not all(k in state for k in SDXL_KEYS):
        raise InputError(f"'{file}' is not an SDXL embedding: SDXL needs a file with clip_l and clip_g "
                         "tensors (one per text encoder); this one looks made for SD1.x", field="path")


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
    `load_textual_inversion(file, token=...)`; SDXL files (clip_l, clip_g) go into both encoders, as
    `load_textual_inversion(state[part], token=..., text_encoder=..., tokenizer=...)` twice."""
    from nodegraph_diffusion.loading import read_state_dict, refuse_pickle
    from nodegraph_diffusion.paths import fingerprint_path, resolve_model_ref

    file = resolve_model_ref(str(path), ctx, kind="embedding")
    if file.is_dir() or file.suffix.lower() not in SUFFIXES:
        raise InputError(f"'{file}' is not an embedding file ({', '.join(SUFFIXES)})", field="path")
    refuse_pickle(Path(file), ctx)
    family = encoder.source.family
    if family not in FAMILIES:
        raise InputError(f"textual-inversion embeddings work on SD1.x and SDXL text encoders, not "
                         f"{family!r} ones", field="encoder")
    state = read_state_dict(Path(file), ctx)
    token = token or _own_token(state, file)
    _check_layout(state, family, file)
    taken = {p.token for p in encoder.embeddings}
    if token in taken:
        raise InputError(f"the encoder already has an embedding for the word {token!r}: give this one "
                         "another `token`", field="token")
    patch = EmbeddingPatch(str(file.resolve()), fingerprint_path(file), token)
    return replace(encoder, embeddings=(*encoder.embeddings, patch))
