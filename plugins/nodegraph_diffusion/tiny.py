"""The tiny SD-architecture model ("tinyworld") used by tests, examples and the built-in graphs.

Same architecture family as Stable Diffusion 1.x — a cross-attention UNet, a 4-level VAE with
downscale factor 8, a CLIP text encoder with 77 positions, our own CLIP tokenizer and SD1.5's scheduler
config — only tiny (~4 MB), so every code path runs on a laptop CPU in milliseconds and tests can
compare against stock diffusers pipelines exactly. Weights are random but deterministic per seed.

Regenerate the committed files with `python -m nodegraph_diffusion.tiny build`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from nodegraph_diffusion.tiny_tokenizer import MAX_LENGTH, write_tokenizer

BUILTIN_DIR = Path(__file__).parent / "builtin"
CONFIGS_DIR = Path(__file__).parent / "configs"

# SD1.5's scheduler_config.json (PNDM), so schedulers built from the tiny model behave like SD1.5's.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}

VAE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 16, 32, 32),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 8,
    "scaling_factor": 0.18215,
}

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


def _init_(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.2) -> None:
    """Overwrite every parameter from `generator`, so weights depend only on the seed (not on the
    global RNG or on how diffusers happens to initialise layers). Norm weights stay near 1."""
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            is_norm_weight = name.endswith("weight") and param.ndim == 1
            fan_in = param[0].numel() if param.ndim > 1 else 1
            std = scale / max(fan_in, 1) ** 0.5 if param.ndim > 1 else 0.05
            param.copy_((1.0 + 0.05 * noise) if is_norm_weight else noise * std)


def build_tiny_components(seed: int = 0, tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """Build the tiny model's components in memory: unet, vae, text_encoder, tokenizer, scheduler."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    generator = torch.Generator("cpu").manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = tokenizer_dir or Path(tmp)
        if tokenizer_dir is None:
            write_tokenizer(folder)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    vocab_size = len(tokenizer)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_config = CLIPTextConfig(
        **TEXT_CONFIG,
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_config)
    for module in (unet, vae, text_encoder):
        _init_(module, generator)
        module.eval()
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_pipeline(seed: int = 0) -> Any:
    """A `StableDiffusionPipeline` of the tiny components (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **build_tiny_components(seed),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model in standard diffusers layout (safetensors), loadable offline with
    `StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)`."""
    folder = Path(folder)
    pipe = build_tiny_pipeline(seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    # Keep our tokenizer's source files next to the tokenizer.json that transformers writes, so the
    # folder also loads with older tokenizer code paths.
    write_tokenizer(folder / "tokenizer")
    return folder


def save_single_file(folder: Path, file: Path) -> Path:
    """Convert a diffusers folder into an original-layout (A1111/ComfyUI) single-file .safetensors."""
    from safetensors.torch import load_file, save_file

    from nodegraph_diffusion.single_file import diffusers_to_original

    folder, file = Path(folder), Path(file)
    parts = {
        "unet": load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"),
        "vae": load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"),
        "text_encoder": load_file(folder / "text_encoder" / "model.safetensors"),
    }
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    state = diffusers_to_original(parts, unet_config)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, file)
    return file


def write_config_folder(model_folder: Path, out: Path) -> Path:
    """Copy a diffusers folder without its weights: the local `config=` folder `from_single_file` needs
    offline (model_index.json, component configs, scheduler config, tokenizer files)."""
    if out.exists():
        shutil.rmtree(out)
    for file in sorted(Path(model_folder).rglob("*")):
        if file.is_file() and file.suffix in (".json", ".txt"):
            target = out / file.relative_to(model_folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    return out


def build_builtin(root: Path = BUILTIN_DIR, configs: Path = CONFIGS_DIR) -> None:
    """Regenerate the committed built-in models (tinyworld and its style LoRA) and the tiny config folder."""
    target = root / "tinyworld"
    if target.exists():
        shutil.rmtree(target)
    save_tiny_model(target, seed=0)
    write_config_folder(target, configs / "tinyworld")
    try:
        from nodegraph_diffusion.lora import save_tiny_style_lora
    except ImportError:  # the LoRA builder arrives in a later step
        return
    style = root / "tinyworld-style"
    if style.exists():
        shutil.rmtree(style)
    save_tiny_style_lora(target, style)


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny build [ROOT]`."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny build [ROOT]", file=sys.stderr)
        return 2
    build_builtin(Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
