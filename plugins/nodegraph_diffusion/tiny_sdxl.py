"""A tiny random SDXL ("tinyxl", and its refiner "tinyxl-refiner") for tests and the SDXL graphs' defaults.

The SDXL architecture in miniature, as diffusers' own SDXL tests build it: a UNet with
`addition_embed_type="text_time"` (pooled embeds + six size ids), two CLIP text encoders whose
penultimate states are concatenated (32 + 32 = the UNet's cross-attention width 64), the second one
a `CLIPTextModelWithProjection` (pooled, projection 32: 6 ids x 8 + 32 = 80 add-embedding inputs), a
4-level VAE (downscale 8 like SDXL's) with SDXL's scaling factor, SDXL's Euler scheduler config, and
the tinyworld tokenizer serving as both tokenizers. Weights are random (seeded): its pictures are
noise, but every code path and every comparison with `StableDiffusionXLPipeline` runs in seconds.

Regenerate the committed copy with `python -m nodegraph_diffusion.tiny_sdxl build`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from nodegraph_diffusion.tiny import _init_
from nodegraph_diffusion.tiny_tokenizer import MAX_LENGTH, write_tokenizer

BUILTIN_DIR = Path(__file__).parent / "builtin"

SDXL_SCHEDULER_CONFIG: dict[str, Any] = {  # stabilityai/stable-diffusion-xl-base-1.0's
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "transformer_layers_per_block": (1, 2),
    "projection_class_embeddings_input_dim": 80,  # 6 * 8 + 32
    "cross_attention_dim": 64,
    "norm_num_groups": 8,
}

REFINER_UNET_CONFIG: dict[str, Any] = {  # the refiner: 5 ids (no target size; an aesthetic score)
    **UNET_CONFIG,
    "projection_class_embeddings_input_dim": 72,  # 5 * 8 + 32
    "cross_attention_dim": 32,  # second encoder only
}

VAE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 4,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 32,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


def build_tiny_sdxl_components(seed: int = 0, refiner: bool = False) -> dict[str, Any]:
    """The components of a tiny SDXL base (or refiner: second encoder only) as pipeline kwargs."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    generator = torch.Generator("cpu").manual_seed(seed)
    tokenizer = _tokenizer()
    text_config = CLIPTextConfig(**TEXT_CONFIG, vocab_size=len(tokenizer),
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    unet = UNet2DConditionModel(**(REFINER_UNET_CONFIG if refiner else UNET_CONFIG))
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = None if refiner else CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            _init_(module, generator)
            module.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": None if refiner else tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
    }


def build_tiny_sdxl_pipeline(seed: int = 0, refiner: bool = False) -> Any:
    """`StableDiffusionXLPipeline` (or the refiner's `...Img2ImgPipeline`) of the tiny components."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    parts = build_tiny_sdxl_components(seed, refiner)
    if refiner:
        return StableDiffusionXLImg2ImgPipeline(**parts, requires_aesthetics_score=True,
                                                force_zeros_for_empty_prompt=False, add_watermarker=False)
    return StableDiffusionXLPipeline(**parts, add_watermarker=False)


def save_tiny_sdxl(folder: Path, seed: int = 0, refiner: bool = False) -> Path:
    """Write a tiny SDXL in standard diffusers layout (safetensors), loadable offline."""
    folder = Path(folder)
    build_tiny_sdxl_pipeline(seed, refiner).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        if (folder / name).is_dir():
            write_tokenizer(folder / name)
    return folder


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_sdxl build [ROOT]`: regenerate builtin/tinyxl(-refiner)."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_sdxl build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    for name, seed, refiner in (("tinyxl", 0, False), ("tinyxl-refiner", 1, True)):
        if (root / name).exists():
            shutil.rmtree(root / name)
        save_tiny_sdxl(root / name, seed, refiner)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
