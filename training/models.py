"""Fresh (untrained) models of the tinyworld family for training, in standard diffusers classes.

The UNet and the text encoder keep the configs of `nodegraph_diffusion.tiny` (so the shipped family
has the architecture every test and graph already knows); the VAE is a little wider than the random
one (a 4-level AutoencoderKL, downscale 8, 4 latent channels — what the engine assumes), because it
has to reconstruct a 64x64 scene from an 8x8 latent. Layers keep diffusers' default initialisation:
the seeded `_init_` of `tiny.py` is made to look like noise, not to train.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from nodegraph_diffusion.tiny import SD15_SCHEDULER_CONFIG, TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG
from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

TRAIN_VAE_CONFIG: dict[str, Any] = {**VAE_CONFIG, "block_out_channels": (16, 32, 64, 64)}


def make_tokenizer(folder: Path | None = None) -> Any:
    """The project's own CLIP tokenizer (every grammar word is one token)."""
    from transformers import CLIPTokenizer

    if folder is not None:
        write_tokenizer(folder)
        return CLIPTokenizer.from_pretrained(folder)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


def new_vae(seed: int) -> Any:
    """An AutoencoderKL with default init drawn from `seed`."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TRAIN_VAE_CONFIG)


def new_unet(seed: int) -> Any:
    """The tinyworld UNet architecture, default init drawn from `seed`."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIG)


def new_text_encoder(seed: int, tokenizer: Any) -> Any:
    """The tinyworld CLIP text encoder, default init drawn from `seed`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(**TEXT_CONFIG, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


def noise_scheduler() -> Any:
    """The training noise schedule: SD1.5's (DDPM maths over the same betas)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """Token ids padded to 77, as the pipelines (and `diffusion.encode_text`) feed the encoder."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def save_pipeline(folder: Path, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any) -> Path:
    """Write the family in standard diffusers layout (StableDiffusionPipeline.from_pretrained loads it)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    del tokenizer  # a used tokenizer saves its padding settings (transformers 5): save a fresh one
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=make_tokenizer(),
                                   scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(Path(folder) / "tokenizer")
    return Path(folder)
