"""A tiny random SD3/SD3.5 ("tinysd3") for tests and graphs/sd35.yaml's default.

SD3's architecture in miniature, as diffusers' own SD3 tests build it, keeping the real models' shape
where the pipeline's arithmetic depends on it:
- `SD3Transformer2DModel` (MMDiT: 2 joint blocks, 4 heads of 8, patch 2) reading 16 latent channels,
  like SD3.5's. Two blocks, because the last block is `context_pre_only` and adds no ControlNet
  residual: with one, an SD3 ControlNet would be an exact no-op, and skip-layer guidance (which skips
  a block other than the last, SD3.5-medium's 7-9 of 24) would have nothing to skip;
- three text encoders of different widths, as the real CLIP-L (768), OpenCLIP bigG (1280) and T5-XXL
  (4096): two `CLIPTextModelWithProjection` 16 and 32 wide (their penultimate states side by side are
  48 wide, zero-padded to T5's 64 by the pipeline; their projections 16 + 32 = the pooled 48), and the
  tiny T5 of tiny_t5.py, 64 wide = the transformer's `joint_attention_dim`;
- the tinyworld CLIP tokenizer for both CLIP encoders and tiny_t5's T5 tokenizer;
- an `AutoencoderKL` with 16 latent channels, 4 levels (downscale 8), no quant convs, SD3's
  `scaling_factor` and `shift_factor`;
- `FlowMatchEulerDiscreteScheduler` with SD3.5's scheduler config (shift 3, no dynamic shifting).
Weights are random (seeded): its pictures are noise, but every code path runs in a second.
`without_t5=True` leaves the T5 encoder out (`text_encoder_3: null`), as diffusers allows.

Regenerate the committed copy with `python -m nodegraph_diffusion.tiny_sd3 build`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny_tokenizer import MAX_LENGTH, write_tokenizer

BUILTIN_DIR = Path(__file__).parent / "builtin"

# stabilityai/stable-diffusion-3.5-medium's (and -large's) scheduler_config.json
SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}

T5_WIDTH = 64
TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "caption_projection_dim": 32,  # heads x head width, as the real models
    "joint_attention_dim": T5_WIDTH,
    "pooled_projection_dim": 48,  # CLIP-L's projection + CLIP-G's
    "pos_embed_max_size": 32,
}

VAE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 4,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 1.5305,  # SD3's
    "shift_factor": 0.0609,
}

# (hidden width, activation) of the CLIP-L and CLIP-G stand-ins; projection = hidden width
CLIP_ENCODERS: tuple[tuple[int, str], ...] = ((16, "quick_gelu"), (32, "gelu"))


def _clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


def build_tiny_sd3_components(seed: int = 0, without_t5: bool = False) -> dict[str, Any]:
    """The components of a tiny SD3 as `StableDiffusion3Pipeline` kwargs."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from nodegraph_diffusion.tiny import _init_
    from nodegraph_diffusion.tiny_t5 import build_t5_tokenizer, build_tiny_t5

    generator = torch.Generator("cpu").manual_seed(seed)
    tokenizer = _clip_tokenizer()
    encoders = []
    for width, act in CLIP_ENCODERS:
        config = CLIPTextConfig(hidden_size=width, intermediate_size=37, num_attention_heads=4,
                                num_hidden_layers=2, max_position_embeddings=MAX_LENGTH, projection_dim=width,
                                hidden_act=act, layer_norm_eps=1e-5, vocab_size=len(tokenizer),
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)
        encoders.append(CLIPTextModelWithProjection(config))
    transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    for module in (transformer, vae, *encoders):
        _init_(module, generator)
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": encoders[0],
        "tokenizer": tokenizer,
        "text_encoder_2": encoders[1],
        "tokenizer_2": tokenizer,
        "text_encoder_3": None if without_t5 else build_tiny_t5(seed + 1, d_model=T5_WIDTH),
        "tokenizer_3": None if without_t5 else build_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
    }


def build_tiny_sd3_pipeline(seed: int = 0, without_t5: bool = False) -> Any:
    """`StableDiffusion3Pipeline` of the tiny components."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**build_tiny_sd3_components(seed, without_t5))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd3(folder: Path, seed: int = 0, without_t5: bool = False) -> Path:
    """Write a tiny SD3 in standard diffusers layout (safetensors), loadable offline."""
    folder = Path(folder)
    build_tiny_sd3_pipeline(seed, without_t5).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):  # vocab.json + merges.txt, as the other tiny models ship it
        write_tokenizer(folder / name)
    return folder


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_sd3 build [ROOT]`: regenerate builtin/tinysd3."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_sd3 build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    if (root / "tinysd3").exists():
        shutil.rmtree(root / "tinysd3")
    save_tiny_sd3(root / "tinysd3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
