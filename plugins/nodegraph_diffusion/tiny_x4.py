"""A tiny random Stable Diffusion x4 upscaler ("tinyworld-x4") so graphs/upscale.yaml runs offline.

stabilityai/stable-diffusion-x4-upscaler denoises latents of the low-res picture's size with a UNet of
7 inputs (4 latent + 3 picture channels) that takes the picture's noise level as `class_labels`
(`num_class_embeds` 1000), and decodes them with a 3-level VAE (4x larger, scaling factor 0.08333); a
DDPM `low_res_scheduler` noises the picture, a DDIM v-prediction scheduler samples. The stand-in keeps
that layout in tiny: tinyworld's text encoder and tokenizer (copied), a small 7-input UNet and a small
3-level VAE, random from their own seeds, and schedulers configured like the real model's. It is *untrained*:
its upscales are noise. It is here so every code path runs in a second and the tests can compare the
graph with StableDiffusionUpscalePipeline to the last bit.

Regenerate the committed copy with `python -m nodegraph_diffusion.tiny_x4 build`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny import BUILTIN_DIR, UNET_CONFIG
from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

NAME = "tinyworld-x4"
SEED = 19  # the UNet's and VAE's own seed (the text encoder is tinyworld's trained one)
# as the real one, no attention at the full latent resolution (the picture's: 4096 tokens at 64 px)
X4_UNET_CONFIG: dict[str, Any] = {**UNET_CONFIG, "in_channels": 7, "block_out_channels": (16, 32),
                                  "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                                  "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
                                  "attention_head_dim": 4, "num_class_embeds": 1000}
X4_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (16, 16, 32),
    "layers_per_block": 1, "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3, "norm_num_groups": 8, "scaling_factor": 0.08333,
    "sample_size": 64,
}
# modelled on the x4 upscaler's scheduler/ and low_res_scheduler/ configs (DDIM with v-prediction; DDPM
# with betas 1e-4..0.02), written from what its model card and diffusers' tests use, not read from the
# checkpoint (none may be downloaded here); a real model's folder brings its own
X4_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
    "steps_offset": 1, "trained_betas": None,
}
X4_LOW_RES_CONFIG: dict[str, Any] = {
    "beta_end": 0.02, "beta_schedule": "scaled_linear", "beta_start": 0.0001, "clip_sample": False,
    "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_small",
}


def build_tiny_x4_components(seed: int = SEED, root: Path = BUILTIN_DIR) -> dict[str, Any]:
    """The tiny x4 upscaler's components as `StableDiffusionUpscalePipeline` kwargs."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

    from nodegraph_diffusion.tiny import _init_
    from nodegraph_diffusion.tiny_ip2p import tinyworld_parts

    generator = torch.Generator("cpu").manual_seed(seed)
    unet, vae = UNet2DConditionModel(**X4_UNET_CONFIG), AutoencoderKL(**X4_VAE_CONFIG)
    for module in (unet, vae):
        _init_(module, generator)
        module.eval()
    parts = tinyworld_parts(root)
    return {"text_encoder": parts["text_encoder"], "tokenizer": parts["tokenizer"], "unet": unet, "vae": vae,
            "scheduler": DDIMScheduler.from_config(X4_SCHEDULER_CONFIG),
            "low_res_scheduler": DDPMScheduler.from_config(X4_LOW_RES_CONFIG)}


def save_tiny_x4(folder: Path, seed: int = SEED, root: Path = BUILTIN_DIR) -> Path:
    """Write the tiny x4 upscaler in diffusers layout (model_index `StableDiffusionUpscalePipeline`)."""
    from diffusers import StableDiffusionUpscalePipeline

    folder = Path(folder)
    pipe = StableDiffusionUpscalePipeline(**build_tiny_x4_components(seed, root), max_noise_level=350)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder / "tokenizer")
    return folder


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_x4 build [ROOT]`: regenerate builtin/tinyworld-x4."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_x4 build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    if (root / NAME).exists():
        shutil.rmtree(root / NAME)
    save_tiny_x4(root / NAME, root=BUILTIN_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
