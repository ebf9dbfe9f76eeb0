"""A tiny random Flux.1 ("tinyflux" dev and "tinyflux-schnell") for tests and graphs/flux.yaml's default.

Flux.1's architecture in miniature, as diffusers' own Flux tests build it, with the real models' shape
where the pipeline's arithmetic depends on it:
- `FluxTransformer2DModel` (1 double-stream + 1 single-stream block, 2 heads of 16, RoPE axes 4+4+8)
  reading 64 input channels: 16 latent channels packed in 2x2 patches, like FLUX.1's;
  `guidance_embeds` true for "dev" (guidance-distilled: the guidance scale is an input), false for
  "schnell" (timestep-distilled: no guidance input);
- CLIP-L's role (a `CLIPTextModel`, of which only the pooled output is used) with the tinyworld CLIP
  tokenizer, and T5's (the tiny T5 of tiny_t5.py, 32 wide = the transformer's `joint_attention_dim`);
- an `AutoencoderKL` with 16 latent channels, 4 levels (downscale 8), no quant convs, and a
  `shift_factor` besides its scaling factor, like FLUX.1's VAE;
- `FlowMatchEulerDiscreteScheduler` with FLUX.1-dev's config (dynamic shifting from the image's token
  count) or FLUX.1-schnell's (fixed shift 1).
Weights are random (seeded): its pictures are noise, but every code path runs in a second.

Regenerate the committed copies with `python -m nodegraph_diffusion.tiny_flux build`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny_tokenizer import MAX_LENGTH, write_tokenizer

BUILTIN_DIR = Path(__file__).parent / "builtin"

# black-forest-labs/FLUX.1-dev's and FLUX.1-schnell's scheduler_config.json
DEV_SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
SCHNELL_SCHEDULER_CONFIG: dict[str, Any] = {**DEV_SCHEDULER_CONFIG, "shift": 1.0,
                                            "use_dynamic_shifting": False}

TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels x 2x2 patch
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # the T5 states' width
    "pooled_projection_dim": 32,  # CLIP's pooled output width
    "axes_dims_rope": (4, 4, 8),  # sums to attention_head_dim
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
    "scaling_factor": 0.3611,  # FLUX.1's
    "shift_factor": 0.1159,
}

CLIP_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

VARIANTS = {"dev": (True, DEV_SCHEDULER_CONFIG), "schnell": (False, SCHNELL_SCHEDULER_CONFIG)}


def _clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


def build_tiny_flux_components(seed: int = 0, variant: str = "dev") -> dict[str, Any]:
    """The components of a tiny Flux.1 `variant` ("dev" or "schnell") as `FluxPipeline` kwargs."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodegraph_diffusion.tiny import _init_
    from nodegraph_diffusion.tiny_t5 import build_t5_tokenizer, build_tiny_t5

    guidance, scheduler_config = VARIANTS[variant]
    generator = torch.Generator("cpu").manual_seed(seed)
    tokenizer = _clip_tokenizer()
    clip_config = CLIPTextConfig(**CLIP_CONFIG, vocab_size=len(tokenizer),
                                 bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    transformer = FluxTransformer2DModel(**TRANSFORMER_CONFIG, guidance_embeds=guidance)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(clip_config)
    for module in (transformer, vae, text_encoder):
        _init_(module, generator)
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": build_tiny_t5(seed + 1, d_model=TRANSFORMER_CONFIG["joint_attention_dim"]),
        "tokenizer_2": build_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler.from_config(scheduler_config),
    }


def build_tiny_flux_pipeline(seed: int = 0, variant: str = "dev") -> Any:
    """`FluxPipeline` of the tiny components."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**build_tiny_flux_components(seed, variant))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_flux(folder: Path, seed: int = 0, variant: str = "dev") -> Path:
    """Write a tiny Flux.1 in standard diffusers layout (safetensors), loadable offline."""
    folder = Path(folder)
    build_tiny_flux_pipeline(seed, variant).save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder / "tokenizer")  # vocab.json + merges.txt, as the other tiny models ship it
    return folder


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_flux build [ROOT]`: regenerate builtin/tinyflux(-schnell)."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_flux build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    for name, seed, variant in (("tinyflux", 0, "dev"), ("tinyflux-schnell", 1, "schnell")):
        if (root / name).exists():
            shutil.rmtree(root / name)
        save_tiny_flux(root / name, seed, variant)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
