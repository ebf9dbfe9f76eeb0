"""SDXL textual inversion: a clip_l/clip_g file goes into both text encoders, equal to diffusers'
`load_textual_inversion` on each encoder (tokens and embeddings, max abs 0), pixels exact on tinyxl;
the file layout must fit the family (an SDXL file on SD1.x, an SD1.x file on SDXL: InputError on path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.embedding_nodes import load_embedding
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import EmbeddingRef, ModelRef
from nodegraph_diffusion.text_nodes import encode_text
from safetensors.torch import load_file, save_file

from nodegraph import Engine
from nodegraph.errors import InputError
from tests.diffusion.test_sdxl import xl_pipe
from tests.run_helpers import cpu_options

WIDTHS = {"clip_l": 32, "clip_g": 32}  # tinyxl's two text encoders
PROMPT = "a big <glow> circle in the center, blue background"


def _sdxl_file(folder: Path, name: str, count: int = 2, seed: int = 1) -> Path:
    gen = torch.Generator().manual_seed(seed)
    path = folder / f"{name}.safetensors"
    save_file({k: torch.randn(count, w, generator=gen) for k, w in WIDTHS.items()}, path)
    return path


def _pipe_with(file: Path, token: str) -> Any:
    pipe = xl_pipe()
    state = load_file(file)
    pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    pipe.load_textual_inversion(state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    return pipe


def test_sdxl_embedding_equals_load_textual_inversion_on_both_encoders(ctx: Any, tmp_path: Path) -> None:
    file = _sdxl_file(tmp_path, "<glow>", count=3)
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    encoder = load_embedding(ctx, model.text_encoder, EmbeddingRef(str(file)))
    assert encoder.embeddings[0].token == "<glow>"  # A1111: the file name is the word
    ours = encode_text(ctx, encoder, PROMPT)
    plain = encode_text(ctx, model.text_encoder, PROMPT)
    pipe = _pipe_with(file, "<glow>")
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    assert (ours.embeds - embeds).abs().max().item() == 0.0
    assert (ours.pooled - pooled).abs().max().item() == 0.0
    # the same tokens as the pipeline's tokenizers (three vectors: <glow> <glow>_1 <glow>_2)
    text = pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer)
    assert list(ours.token_ids) == pipe.tokenizer(text, padding="max_length", max_length=77).input_ids
    # both halves act: each encoder's half of the features moves
    for half in (slice(0, 32), slice(32, 64)):
        assert (ours.embeds[..., half] - plain.embeds[..., half]).abs().max().item() > 1e-3
    assert (ours.pooled - plain.pooled).abs().max().item() > 1e-3
    assert torch.equal(encode_text(ctx, model.text_encoder, PROMPT).embeds, plain.embeds)  # not mutated


def test_sdxl_embedding_pixels_equal_the_pipeline(tmp_path: Path) -> None:
    file = _sdxl_file(tmp_path, "glowstyle", count=2, seed=2)
    prompt = "glowstyle, a big red circle in the center, blue background"
    nodes = {"model": {"type": "diffusion.load_model", "path": "builtin:tinyxl"},
             "emb": {"type": "diffusion.load_embedding", "encoder": "@model.text_encoder", "path": str(file)},
             "pos": {"type": "diffusion.encode_text", "encoder": "@emb", "text": prompt},
             "neg": {"type": "diffusion.encode_text", "encoder": "@emb", "text": "blurry"},
             "sched": {"type": "diffusion.scheduler", "model_scheduler": "@model.scheduler", "name": "euler"},
             "empty": {"type": "diffusion.empty_latents", "width": 64, "height": 64},
             "lat": {"type": "diffusion.sample", "unet": "@model.unet", "scheduler": "@sched",
                     "positive": "@pos", "negative": "@neg", "latents": "@empty", "seed": 3, "steps": 3,
                     "cfg": 5.0},
             "img": {"type": "diffusion.vae_decode", "vae": "@model.vae", "latents": "@lat"},
             "save": {"type": "core.save_image", "image": "@img", "path": "ti.png"}}
    Engine().run({"version": 1, "nodes": nodes}, options=cpu_options(tmp_path / "out"))
    pipe = _pipe_with(file, "glowstyle")
    image = pipe(prompt, negative_prompt="blurry", height=64, width=64, num_inference_steps=3,
                 guidance_scale=5.0, generator=torch.Generator().manual_seed(3)).images[0]
    from PIL import Image as PILImage

    with PILImage.open(tmp_path / "out" / "ti.png") as ours:
        assert np.array_equal(np.asarray(ours.convert("RGB")), np.asarray(image))
    plain = xl_pipe()(prompt, negative_prompt="blurry", height=64, width=64, num_inference_steps=3,
                      guidance_scale=5.0, generator=torch.Generator().manual_seed(3)).images[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(image))  # the embedding changes the picture


def _sd1_file(tmp_path: Path, name: str) -> Path:
    file = tmp_path / f"{name}.safetensors"
    save_file({"emb_params": torch.zeros(2, 32)}, file)
    return file


@pytest.mark.parametrize(("write", "model_name", "message"), [
    (_sdxl_file, "tinyworld", "SDXL embedding"),
    (_sd1_file, "tinyxl", "not an SDXL embedding"),
])
def test_an_embedding_of_the_other_family_is_refused(ctx: Any, tmp_path: Path, write: Any, model_name: str,
                                                     message: str) -> None:
    file = write(tmp_path, "otherstyle")
    model = load_model(ctx, ModelRef(f"builtin:{model_name}"))
    with pytest.raises(InputError, match=message) as info:
        load_embedding(ctx, model.text_encoder, EmbeddingRef(str(file)))
    assert info.value.field == "path"


def test_sdxl_pt_needs_allow_pickle(make_ctx: Any, tmp_path: Path) -> None:
    file = tmp_path / "oldxl.pt"
    torch.save({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)}, file)
    ctx = make_ctx()
    with pytest.raises(InputError, match="--allow-pickle"):
        load_embedding(ctx, load_model(ctx, ModelRef("builtin:tinyxl")).text_encoder, EmbeddingRef(str(file)))
    allowed = make_ctx(allow_pickle=True)
    encoder = load_embedding(allowed, load_model(allowed, ModelRef("builtin:tinyxl")).text_encoder,
                             EmbeddingRef(str(file)))
    assert encoder.embeddings[0].token == "oldxl"
    encode_text(allowed, encoder, "oldxl, a red square")
