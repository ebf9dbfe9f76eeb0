"""The tiny model: own tokenizer, deterministic build, diffusers layout, single-file round trip."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from nodegraph_diffusion.tiny import build_tiny_components, save_tiny_model
from nodegraph_diffusion.tiny_tokenizer import WORDS, build_vocab, write_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


def test_every_word_is_one_token(tokenizer: CLIPTokenizer) -> None:
    vocab, _ = build_vocab()
    for word in WORDS:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert ids == [vocab[word + "</w>"]], word


def test_any_text_tokenizes_with_byte_fallback(tokenizer: CLIPTokenizer) -> None:
    ids = tokenizer("Zebra émigré 42 ☃!", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids[1:ids.index(tokenizer.eos_token_id)]
    assert tokenizer.model_max_length == 77 and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_prompt_words_and_punctuation(tokenizer: CLIPTokenizer) -> None:
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a person in a red shirt, green background").input_ids)
    assert tokens[1:-1] == ["a</w>", "person</w>", "in</w>", "a</w>", "red</w>", "shirt</w>", ",</w>",
                            "green</w>", "background</w>"]


def test_build_is_deterministic_per_seed() -> None:
    a, b, c = build_tiny_components(0), build_tiny_components(0), build_tiny_components(1)
    for part in ("unet", "vae", "text_encoder"):
        sa, sb, sc = (x[part].state_dict() for x in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_committed_builtin_is_the_trained_family_on_the_tiny_architecture(tiny_dir: Path) -> None:
    """The built-in weights come from `training/` (not the random factory), on the factory's UNet and
    text encoder architecture, so the factory's models stay stand-ins for it in tests."""
    fresh, again = build_tiny_components(0), build_tiny_components(0)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, local_files_only=True)
    for part in ("unet", "text_encoder"):
        ours, theirs = fresh[part].state_dict(), getattr(pipe, part).state_dict()
        assert all(torch.equal(ours[k], again[part].state_dict()[k]) for k in ours), part  # deterministic
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}, part
        assert not all(torch.equal(ours[k], theirs[k].to(ours[k].dtype)) for k in ours), part  # trained
    assert json.loads((tiny_dir / "training.json").read_text())["trained_by"] == "python -m training.train"
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert sum(p.stat().st_size for p in tiny_dir.rglob("*") if p.is_file()) < 10_000_000  # 30 MB in all


def test_saved_model_reloads_offline_and_generates(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path / "tw", seed=3)
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    assert pipe.vae_scale_factor == 8


def test_single_file_round_trips_exactly(tiny_dir: Path, tiny_single_file: Path) -> None:
    folder = StableDiffusionPipeline.from_pretrained(tiny_dir, local_files_only=True)
    single = StableDiffusionPipeline.from_single_file(str(tiny_single_file), config=str(tiny_dir),
                                                      local_files_only=True)
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, part).state_dict(), getattr(single, part).state_dict()
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0, part
