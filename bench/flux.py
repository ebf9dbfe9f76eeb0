"""Benchmark: graphs/flux.yaml through the engine vs `FluxPipeline`, one process.

Same model, prompt, size, steps, guidance and seed on both sides; the engine runs without its result
cache (`cache_mb=0`) so every node runs every time; models stay resident on both sides; runs
alternate after a warm-up (as bench/sdxl.py does). Reports min and median seconds per run and per
step of each side.

    python bench/flux.py                                 # CPU, builtin:tinyflux, 64x64, 28 steps
    python bench/flux.py --dev --device cuda             # FLUX.1-dev architecture, random init, 1024², bf16
    python bench/flux.py --dev --layers 1 --t5-layers 2 --size 256 --steps 3 --repeats 2   # CPU-sized cut
    python bench/flux.py --model /models/FLUX.1-dev --device cuda

`--dev` builds FLUX.1-dev's architecture from its published configs (transformer: 19 double- and 38
single-stream blocks, 24 heads of 128, ~12 B parameters; T5-v1.1-XXL encoder ~4.7 B; CLIP ViT-L;
the 16-channel VAE) with random weights, no download; weights do not change FLOPs. `--layers` and
`--t5-layers` cut the block counts (same widths) for machines that cannot hold the full model; the
JSON says what ran.
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
from bench.common import alternate, emit, engine_vs_diffusers, scratch_dir  # noqa: E402

GRAPH = ROOT / "graphs" / "flux.yaml"
PROMPT = "a big red circle in the center, blue background"

FLUX_DEV_TRANSFORMER: dict[str, Any] = {  # black-forest-labs/FLUX.1-dev transformer/config.json
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
    "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}
T5_XXL: dict[str, Any] = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
                          "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu",
                          "vocab_size": 32128, "dropout_rate": 0.0, "is_encoder_decoder": False}
FLUX_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "use_quant_conv": False, "use_post_quant_conv": False,
    "scaling_factor": 0.3611, "shift_factor": 0.1159, "sample_size": 1024,
}


def build_flux_dev(folder: Path, dtype: torch.dtype, layers: int | None, t5_layers: int | None) -> Path:
    """Write a FLUX.1-dev-architecture model with random weights (made in `dtype`) to `folder`."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from nodegraph_diffusion.tiny_flux import DEV_SCHEDULER_CONFIG
    from nodegraph_diffusion.tiny_t5 import build_t5_tokenizer
    from nodegraph_diffusion.tiny_tokenizer import write_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in `dtype`: no float32 copy at any time
    try:
        write_tokenizer(folder / "_tok")
        tokenizer = CLIPTokenizer.from_pretrained(folder / "_tok")
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                            num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu",
                                            vocab_size=49408, max_position_embeddings=77,
                                            bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id,
                                            pad_token_id=tokenizer.pad_token_id))
        t5 = T5EncoderModel(T5Config(**{**T5_XXL, "num_layers": t5_layers or T5_XXL["num_layers"]}))
        config = dict(FLUX_DEV_TRANSFORMER)
        if layers is not None:
            config.update(num_layers=layers, num_single_layers=2 * layers)
        pipe = FluxPipeline(transformer=FluxTransformer2DModel(**config), vae=AutoencoderKL(**FLUX_VAE),
                            text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5,
                            tokenizer_2=build_t5_tokenizer(),
                            scheduler=FlowMatchEulerDiscreteScheduler.from_config(DEV_SCHEDULER_CONFIG))
        target = folder / "flux_dev_random"
        pipe.save_pretrained(target, safe_serialization=True)
        write_tokenizer(target / "tokenizer")
        return target
    finally:
        torch.set_default_dtype(default)


def main(argv: list[str] | None = None) -> int:
    with scratch_dir() as tmp:
        return bench(tmp, argv)


def bench(tmp: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dev", action="store_true",
                        help="FLUX.1-dev-sized random model, 1024x1024, 28 steps")
    parser.add_argument("--layers", type=int, default=None,
                        help="--dev: double-stream blocks (single-stream: twice as many)")
    parser.add_argument("--t5-layers", type=int, default=None, help="--dev: T5 encoder layers")
    parser.add_argument("--model", default=None, help="a Flux.1 diffusers folder (default: builtin:tinyflux)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="default: bfloat16 with --dev or --model, else float32")
    args = parser.parse_args(argv)

    from diffusers import FluxPipeline
    from nodegraph_diffusion.paths import BUILTIN_DIR

    from nodegraph import Engine, RunOptions

    big = args.dev or args.model is not None
    device = args.device
    dtype = getattr(torch, args.dtype) if args.dtype else torch.bfloat16 if big else torch.float32
    steps = args.steps or 28
    size = args.size or (1024 if big else 64)
    if args.model:
        folder = Path(args.model)
    else:
        folder = BUILTIN_DIR / "tinyflux"
        if args.dev:
            folder = build_flux_dev(tmp, dtype, args.layers, args.t5_layers)

    engine = Engine(cache_mb=0)
    options = RunOptions(out_dir=tmp / "out", device=device, dtype=str(dtype).replace("torch.", ""),
                         show_progress=False)
    overrides = {"model": str(folder), "steps": steps, "width": size, "height": size, "guidance": 3.5}
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)

    def run_engine(seed: int) -> None:
        engine.run(GRAPH, {**overrides, "seed": seed}, options)

    def run_pipeline(seed: int) -> None:
        image = pipe(PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=3.5,
                     generator=torch.Generator().manual_seed(seed)).images[0]
        image.save(tmp / "pipeline.png")

    sides = alternate({"engine": run_engine, "diffusers": run_pipeline}, args.repeats, device)
    model = "builtin:tinyflux" if not big else str(args.model) if args.model else "flux-dev-random-init"
    emit({
        "model": model, "layers": args.layers, "t5_layers": args.t5_layers, "steps": steps,
        "size": f"{size}x{size}", "dtype": str(dtype).replace("torch.", ""), "repeats": args.repeats,
        **engine_vs_diffusers(sides, steps),
    }, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
