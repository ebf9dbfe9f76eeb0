"""Benchmark: graphs/sdxl.yaml through the engine vs `StableDiffusionXLPipeline`, one process.

Same model, prompt, size, steps, scheduler (Euler, SDXL's default) and seed on both sides; the engine
runs without its result cache (`cache_mb=0`) so every node runs every time; models stay resident on
both sides; runs alternate after a warm-up (as bench/txt2img.py does).

    python bench/sdxl.py                          # CPU, builtin:tinyxl (tiny random SDXL), 64x64, 20 steps
    python bench/sdxl.py --xl --device cuda       # SDXL base architecture, random init, 1024², 30 steps, fp16
    python bench/sdxl.py --model /models/sdxl-base --device cuda   # any SDXL diffusers folder
    python bench/sdxl.py --xl --dtype bfloat16 --size 128 --steps 3 --repeats 2   # the real size on a CPU

`--xl` builds the SDXL base architecture from its published configs (UNet ~2.6 B parameters, CLIP
ViT-L and OpenCLIP ViT-bigG text encoders, VAE) with random weights — no download; weights do not
change FLOPs. Prints one JSON object with medians, the ratio, it/s of each side and, on CUDA, the
peak memory allocated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
from bench.common import alternate, emit, scratch_dir  # noqa: E402

GRAPH = ROOT / "graphs" / "sdxl.yaml"
PROMPT = "a big red circle in the center, blue background"

SDXL_UNET: dict[str, Any] = {  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20), "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
}
SDXL_VAE: dict[str, Any] = {
    "sample_size": 1024, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.13025, "force_upcast": True,
}


def build_sdxl(folder: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write an SDXL-base-architecture model with random weights to `folder` (diffusers layout), made
    and stored in `dtype` (bfloat16 halves the 14 GB of float32 in memory and on disk)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the modules are made in `dtype`: no float32 copy at any time
    try:
        return _build(folder)
    finally:
        torch.set_default_dtype(default)


def _build(folder: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from nodegraph_diffusion.tiny_sdxl import SDXL_SCHEDULER_CONFIG
    from nodegraph_diffusion.tiny_tokenizer import write_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tok_dir = folder / "_tok"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "vocab_size": 49408, "max_position_embeddings": 77}
    clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                          num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu",
                                          **ids))
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                        num_attention_heads=20, num_hidden_layers=32,
                                                        projection_dim=1280, hidden_act="gelu", **ids))
    pipe = StableDiffusionXLPipeline(
        unet=UNet2DConditionModel(**SDXL_UNET), vae=AutoencoderKL(**SDXL_VAE), text_encoder=clip_l,
        text_encoder_2=clip_g, tokenizer=tokenizer, tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG), add_watermarker=False)
    target = folder / "sdxl_random"
    pipe.save_pretrained(target, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        write_tokenizer(target / name)
    return target


def main(argv: list[str] | None = None) -> int:
    with scratch_dir() as tmp:
        return bench(tmp, argv)


def bench(tmp: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xl", action="store_true", help="SDXL-base-sized random model, 1024x1024, 30 steps")
    parser.add_argument("--model", default=None, help="an SDXL diffusers folder (default: builtin:tinyxl)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="default: float16 on a GPU, float32 on the CPU (bfloat16 fits --xl in ~16 GB)")
    args = parser.parse_args(argv)

    from diffusers import StableDiffusionXLPipeline
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.schedulers import make_scheduler
    from nodegraph_diffusion.types import SchedulerSpec

    from nodegraph import Engine, RunOptions

    big = args.xl or args.model is not None
    device = args.device
    dtype = getattr(torch, args.dtype) if args.dtype else torch.float16 if device != "cpu" else torch.float32
    steps = args.steps or (30 if big else 20)
    size = args.size or (1024 if big else 64)
    folder = Path(args.model) if args.model else build_sdxl(tmp, dtype) if args.xl else BUILTIN_DIR / "tinyxl"

    engine = Engine(cache_mb=0)
    options = RunOptions(out_dir=tmp / "out", device=device, dtype=str(dtype).replace("torch.", ""),
                         show_progress=False)
    overrides = {"model": str(folder), "steps": steps, "width": size, "height": size, "scheduler": "euler",
                 "cfg": 5.0}
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, torch_dtype=dtype,
                                                     add_watermarker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    spec = SchedulerSpec("euler", tuple(sorted(dict(pipe.scheduler.config).items())))

    def run_engine(seed: int) -> None:
        engine.run(GRAPH, {**overrides, "seed": seed}, options)

    def run_pipeline(seed: int) -> None:
        pipe.scheduler = make_scheduler(spec)
        image = pipe(PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=steps,
                     guidance_scale=5.0, generator=torch.Generator().manual_seed(seed)).images[0]
        image.save(tmp / "pipeline.png")

    sides = alternate({"engine": run_engine, "diffusers": run_pipeline}, args.repeats, device)
    engine_s, pipe_s = sides["engine"]["median_s"], sides["diffusers"]["median_s"]
    emit({
        "model": "sdxl-random-init" if args.xl else str(args.model or "builtin:tinyxl"),
        "steps": steps, "size": f"{size}x{size}", "dtype": str(dtype).replace("torch.", ""),
        "repeats": args.repeats,
        "engine_min_s": sides["engine"]["min_s"], "engine_median_s": engine_s,
        "diffusers_min_s": sides["diffusers"]["min_s"], "diffusers_median_s": pipe_s,
        "ratio": round(engine_s / pipe_s, 4),
        "engine_it_per_s": round(steps / engine_s, 3), "diffusers_it_per_s": round(steps / pipe_s, 3),
        "peak_gib": {name: side["peak_gib"] for name, side in sides.items()},
    }, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
