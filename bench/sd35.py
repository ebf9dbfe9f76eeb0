"""Benchmark: graphs/sd35.yaml through the engine vs `StableDiffusion3Pipeline`, one process.

Same model, prompt, size, steps, CFG and seed on both sides; the engine runs without its result cache
(`cache_mb=0`) so every node runs every time; models stay resident on both sides; runs alternate after
a warm-up (bench/common.alternate). Reports min and median seconds per image and per step, and the
peak GiB on CUDA.

    python bench/sd35.py                                   # CPU, builtin:tinysd3, 64x64, 20 steps
    python bench/sd35.py --medium --device cuda            # SD3.5-medium architecture, random, 1024², bf16
    python bench/sd35.py --medium --layers 2 --t5-layers 1 --size 256 --steps 3 --repeats 2   # CPU-sized cut
    python bench/sd35.py --model /models/stable-diffusion-3.5-medium --device cuda

`--medium` builds SD3.5-medium from the configs the project ships (`configs/sd35-medium`: MMDiT of 24
blocks, 1536 wide, ~2.2 B parameters; CLIP-L, CLIP-G, T5-v1.1-XXL ~4.9 B; the 16-channel VAE) with
random weights, no download; weights do not change FLOPs. `--layers` and `--t5-layers` cut the block
counts (same widths) for machines that cannot hold the full model; the JSON says what ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
from bench.common import alternate, emit, engine_vs_diffusers, scratch_dir  # noqa: E402

GRAPH = ROOT / "graphs" / "sd35.yaml"
PROMPT = "a big red circle in the center, blue background"
CFG = 4.5


def _config(component: str) -> dict[str, Any]:
    from nodegraph_diffusion.family_facts import CONFIGS_DIR

    data = json.loads((CONFIGS_DIR / "sd35-medium" / component / "config.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def build_sd35_medium(folder: Path, dtype: torch.dtype, layers: int | None, t5_layers: int | None) -> Path:
    """Write an SD3.5-medium-architecture model with random weights (made in `dtype`) to `folder`."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from nodegraph_diffusion.family_facts import CONFIGS_DIR
    from nodegraph_diffusion.tiny_t5 import build_t5_tokenizer
    from nodegraph_diffusion.tiny_tokenizer import write_tokenizer
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
    )

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in `dtype`: no float32 copy at any time
    try:
        write_tokenizer(folder / "_tok")
        tokenizer = CLIPTokenizer.from_pretrained(folder / "_tok")
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
        clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**{**_config("text_encoder"), **ids}))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**{**_config("text_encoder_2"), **ids}))
        t5_config = _config("text_encoder_3")
        t5 = T5EncoderModel(T5Config(**{**t5_config, "num_layers": t5_layers or t5_config["num_layers"]}))
        transformer_config = _config("transformer")
        if layers is not None:
            dual = transformer_config.get("dual_attention_layers") or ()
            transformer_config.update(num_layers=layers,
                                      dual_attention_layers=tuple(i for i in dual if i < layers))
        scheduler_dir = CONFIGS_DIR / "sd35-medium" / "scheduler"
        pipe = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**transformer_config), vae=AutoencoderKL(**_config("vae")),
            text_encoder=clip_l, tokenizer=tokenizer, text_encoder_2=clip_g, tokenizer_2=tokenizer,
            text_encoder_3=t5, tokenizer_3=build_t5_tokenizer(),
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(scheduler_dir))
        target = folder / "sd35_medium_random"
        pipe.save_pretrained(target, safe_serialization=True)
        for name in ("tokenizer", "tokenizer_2"):
            write_tokenizer(target / name)
        return target
    finally:
        torch.set_default_dtype(default)


def main(argv: list[str] | None = None) -> int:
    with scratch_dir() as tmp:
        return bench(tmp, argv)


def bench(tmp: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--medium", action="store_true",
                        help="SD3.5-medium-sized random model, 1024x1024, 40 steps")
    parser.add_argument("--layers", type=int, default=None, help="--medium: transformer blocks")
    parser.add_argument("--t5-layers", type=int, default=None, help="--medium: T5 encoder layers")
    parser.add_argument("--model", default=None, help="an SD3/SD3.5 diffusers folder (default: tinysd3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="default: bfloat16 with --medium or --model, else float32")
    args = parser.parse_args(argv)

    from diffusers import StableDiffusion3Pipeline
    from nodegraph_diffusion.paths import BUILTIN_DIR

    from nodegraph import Engine, RunOptions

    big = args.medium or args.model is not None
    device = args.device
    dtype = getattr(torch, args.dtype) if args.dtype else torch.bfloat16 if big else torch.float32
    steps = args.steps or (40 if big else 20)
    size = args.size or (1024 if big else 64)
    if args.model:
        folder = Path(args.model)
    elif args.medium:
        folder = build_sd35_medium(tmp, dtype, args.layers, args.t5_layers)
    else:
        folder = BUILTIN_DIR / "tinysd3"

    engine = Engine(cache_mb=0)
    options = RunOptions(out_dir=tmp / "out", device=device, dtype=str(dtype).replace("torch.", ""),
                         show_progress=False)
    overrides = {"model": str(folder), "steps": steps, "width": size, "height": size, "cfg": CFG}
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)

    def run_engine(seed: int) -> None:
        engine.run(GRAPH, {**overrides, "seed": seed}, options)

    def run_pipeline(seed: int) -> None:
        image = pipe(PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=steps,
                     guidance_scale=CFG, generator=torch.Generator().manual_seed(seed)).images[0]
        image.save(tmp / "pipeline.png")

    sides = alternate({"engine": run_engine, "diffusers": run_pipeline}, args.repeats, device)
    model = "builtin:tinysd3" if not big else str(args.model) if args.model else "sd35-medium-random-init"
    emit({
        "model": model, "layers": args.layers, "t5_layers": args.t5_layers, "steps": steps,
        "size": f"{size}x{size}", "dtype": str(dtype).replace("torch.", ""), "repeats": args.repeats,
        **engine_vs_diffusers(sides, steps),
    }, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
