"""Textual inversion: encode_text with diffusion.load_embedding == diffusers' load_textual_inversion +
encode_prompt (max abs 0), for the diffusers and A1111 file layouts, one and several vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion.embedding_nodes import load_embedding
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import EmbeddingRef, ModelRef
from nodegraph_diffusion.text_nodes import encode_text
from safetensors.torch import save_file

from nodegraph.errors import InputError

WIDTH = 32  # the tiny model's text width


def _vectors(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model(ctx: Any) -> Any:
    return load_model(ctx, ModelRef("builtin:tinyworld"))


def _diffusers_file(folder: Path, token: str, vectors: torch.Tensor) -> Path:
    path = folder / "learned_embeds.safetensors"
    save_file({token: vectors.contiguous()}, path)
    return path


def _a1111_file(folder: Path, name: str, vectors: torch.Tensor) -> Path:
    path = folder / f"{name}.safetensors"
    save_file({"emb_params": vectors.contiguous()}, path)
    return path


@pytest.mark.parametrize("count", [1, 3])
def test_diffusers_embedding_equals_load_textual_inversion(ctx: Any, model: Any, tiny_pipe: Any,
                                                           tmp_path: Path, count: int) -> None:
    file = _diffusers_file(tmp_path, "<shape>", _vectors(count, 1))
    prompt = "a big <shape> in the center, blue background"
    encoder = load_embedding(ctx, model.text_encoder, EmbeddingRef(str(file)))
    ours = encode_text(ctx, encoder, prompt)
    plain = encode_text(ctx, model.text_encoder, prompt)
    tiny_pipe.load_textual_inversion(str(file))
    theirs, _ = tiny_pipe.encode_prompt(prompt, "cpu", 1, False)
    assert (ours.embeds - theirs).abs().max().item() == 0.0
    assert (ours.embeds - plain.embeds).abs().max().item() > 1e-3  # the embedding acts
    # the shared encoder is untouched: the same prompt without the embedding is the plain one again
    assert torch.equal(encode_text(ctx, model.text_encoder, prompt).embeds, plain.embeds)


def test_a1111_embeddings_stack_by_file_name(ctx: Any, model: Any, tiny_pipe: Any, tmp_path: Path) -> None:
    first = _a1111_file(tmp_path, "glowstyle", _vectors(2, 2))
    second = _a1111_file(tmp_path, "badhands", _vectors(4, 3))
    encoder = load_embedding(ctx, model.text_encoder, EmbeddingRef(str(first)))
    encoder = load_embedding(ctx, encoder, EmbeddingRef(str(second)))
    prompt = "glowstyle, a red circle on the left, badhands, green background"
    ours = encode_text(ctx, encoder, prompt)
    tiny_pipe.load_textual_inversion(str(first), token="glowstyle")
    tiny_pipe.load_textual_inversion(str(second), token="badhands")
    theirs, _ = tiny_pipe.encode_prompt(prompt, "cpu", 1, False)
    assert (ours.embeds - theirs).abs().max().item() == 0.0


def test_a1111_pt_needs_allow_pickle(make_ctx: Any, tmp_path: Path, tiny_pipe: Any) -> None:
    file = tmp_path / "oldstyle.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": _vectors(2, 4)}, "name": "oldstyle",
                "step": 100}, file)
    ctx = make_ctx()
    model = load_model(ctx, ModelRef("builtin:tinyworld"))
    with pytest.raises(InputError, match="--allow-pickle") as info:
        load_embedding(ctx, model.text_encoder, EmbeddingRef(str(file)))
    assert info.value.field == "path"
    allowed = make_ctx(allow_pickle=True)
    encoder = load_embedding(allowed, load_model(allowed, ModelRef("builtin:tinyworld")).text_encoder,
                             EmbeddingRef(str(file)))
    assert encoder.embeddings[0].token == "oldstyle"
    ours = encode_text(allowed, encoder, "oldstyle, a small red square")
    tiny_pipe.load_textual_inversion(str(file))
    theirs, _ = tiny_pipe.encode_prompt("oldstyle, a small red square", "cpu", 1, False)
    assert (ours.embeds - theirs).abs().max().item() == 0.0


def test_a_vector_of_another_width_is_an_input_error(ctx: Any, model: Any, tmp_path: Path) -> None:
    file = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.zeros(1, 768)}, file)
    encoder = load_embedding(ctx, model.text_encoder, EmbeddingRef(str(file)))
    with pytest.raises(InputError, match="width 768"):
        encode_text(ctx, encoder, "wide")


def test_diffusers_bin_under_the_pickle_rule(make_ctx: Any, tmp_path: Path, tiny_pipe: Any) -> None:
    file = tmp_path / "learned_embeds.bin"
    torch.save({"<glow>": _vectors(2, 5)}, file)
    ctx = make_ctx(allow_pickle=True)
    encoder = load_embedding(ctx, load_model(ctx, ModelRef("builtin:tinyworld")).text_encoder,
                             EmbeddingRef(str(file)))
    assert encoder.embeddings[0].token == "<glow>"
    ours = encode_text(ctx, encoder, "a <glow> square, red background")
    tiny_pipe.load_textual_inversion(str(file))
    theirs, _ = tiny_pipe.encode_prompt("a <glow> square, red background", "cpu", 1, False)
    assert (ours.embeds - theirs).abs().max().item() == 0.0
