"""Benchmark: graphs/txt2img.yaml through the engine vs the equivalent diffusers pipeline, one process.

Both sides run the same model, prompt, size, steps, scheduler (DPM++ 2M) and seed; each repeat uses a
new seed for both, and the engine runs without its result cache (`cache_mb=0`), so every node —
text encoding, sampling, decoding, PNG writing — runs every time, as it does in the pipeline call
(which also writes its PNG). Models stay resident on both sides. Runs alternate, after a warm-up.

    python bench/txt2img.py                       # CPU, built-in tiny model, 64x64, 20 steps
    python bench/txt2img.py --sd15 --device cuda  # SD1.5-sized random-init model, 512x512, 30 steps, fp16

`--sd15` builds the SD1.5 architecture from config (UNet ~860M, VAE, CLIP ViT-L/14 text encoder)
with random weights — no download — and saves it once to a temp folder in diffusers layout.
Prints one JSON object: {device, model, steps, size, engine_median_s, diffusers_median_s, ratio, ...};
`engine_median_s` runs the graph *file* each time (YAML parsing included, as `nodegraph run` does);
`engine_preloaded_median_s` runs the already-parsed graph with new params (library use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
from bench.common import scratch_dir, sync  # noqa: E402

GRAPH = ROOT / "graphs" / "txt2img.yaml"
PROMPT = "a big red circle in the center, blue background"


def build_sd15(folder: Path) -> Path:
    """Write an SD1.5-architecture model with random weights (configs as published) to `folder`."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from nodegraph_diffusion.tiny import SD15_SCHEDULER_CONFIG
    from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    tok_dir = folder / "_tok"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(  # CLIP ViT-L/14 text tower, as in SD1.5
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
        num_hidden_layers=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    target = folder / "sd15_random"
    pipe.save_pretrained(target, safe_serialization=True)
    write_tokenizer(target / "tokenizer")
    return target


def main(argv: list[str] | None = None) -> int:
    with scratch_dir() as tmp:
        return bench(tmp, argv)


def bench(tmp: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD1.5-sized random model, 512x512, 30 steps, fp16")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda with --sd15, else cpu)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)

    from diffusers import StableDiffusionPipeline

    from nodegraph import Engine, RunOptions
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.schedulers import make_scheduler
    from nodegraph_diffusion.types import SchedulerSpec

    device = args.device or ("cuda" if args.sd15 else "cpu")
    dtype = torch.float16 if args.sd15 and device != "cpu" else torch.float32
    steps = args.steps or (30 if args.sd15 else 20)
    size = args.size or (512 if args.sd15 else 64)
    folder = build_sd15(tmp) if args.sd15 else BUILTIN_DIR / "tinyworld"

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, torch_dtype=dtype,
                                                   safety_checker=None, requires_safety_checker=False)
    spec = SchedulerSpec("dpmpp_2m", tuple(sorted(dict(pipe.scheduler.config).items())))
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)

    engine = Engine(cache_mb=0)  # no result cache: every node runs every time; models stay resident
    options = RunOptions(out_dir=tmp / "out", device=device, dtype="float16" if dtype == torch.float16 else
                         "float32", show_progress=False)
    overrides = {"model": str(folder), "steps": steps, "width": size, "height": size, "scheduler": "dpmpp_2m",
                 "cfg": 7.5}  # the pipeline's guidance, not the demo graphs' default

    import yaml

    document = yaml.safe_load(GRAPH.read_text())  # for the "graph already loaded" variant

    def run_engine(seed: int, preloaded: bool = False) -> float:
        sync(device)
        start = time.perf_counter()
        engine.run(document if preloaded else GRAPH, {**overrides, "seed": seed}, options)
        sync(device)
        return time.perf_counter() - start

    def run_pipeline(seed: int) -> float:
        sync(device)
        start = time.perf_counter()
        pipe.scheduler = make_scheduler(spec)
        image = pipe(PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=steps,
                     guidance_scale=7.5, generator=torch.Generator().manual_seed(seed)).images[0]
        image.save(tmp / "pipeline.png")
        sync(device)
        return time.perf_counter() - start

    with torch.inference_mode(False):
        run_engine(0), run_engine(0, True), run_pipeline(0)  # warm-up: loads, allocator, kernels
        engine_times, preloaded_times, pipe_times = [], [], []
        for i in range(args.repeats):
            seed = 1000 + i
            runs = [lambda s=seed: engine_times.append(run_engine(s)),
                    lambda s=seed: preloaded_times.append(run_engine(s, True)),
                    lambda s=seed: pipe_times.append(run_pipeline(s))]
            for run in runs[i % 3:] + runs[:i % 3]:  # rotate the order between repeats
                run()
    engine_s, pipe_s = statistics.median(engine_times), statistics.median(pipe_times)
    preloaded_s = statistics.median(preloaded_times)
    print(json.dumps({
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
        "model": "sd15-random-init" if args.sd15 else "builtin:tinyworld",
        "steps": steps,
        "size": f"{size}x{size}",
        "dtype": str(dtype).replace("torch.", ""),
        "repeats": args.repeats,
        "engine_median_s": round(engine_s, 4),
        "diffusers_median_s": round(pipe_s, 4),
        "ratio": round(engine_s / pipe_s, 4),
        # the graph parsed once (library use: `engine.run(dict, overrides)`), YAML parsing excluded
        "engine_preloaded_median_s": round(preloaded_s, 4),
        "ratio_preloaded": round(preloaded_s / pipe_s, 4),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
