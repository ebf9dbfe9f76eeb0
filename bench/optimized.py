"""Benchmark: the engine at each --optimize level vs diffusers eager (default, and channels-last +
fused QKV), same process, same model, size, steps, scheduler (DPM++ 2M), CFG 7.5, batch 1.

    python bench/optimized.py                         # CPU: tiny model, 64x64, 20 steps, fp32
    python bench/optimized.py --sd15 --device cuda    # GPU: SD1.5-sized random init, 512x512, 30 steps, fp16

Reports images/s and UNet steps/s (steps x images/s, VAE decode included) per variant, the one-time
compile cost separately (first call of a compiled run), and each variant's max abs pixel difference to
diffusers' default output. Prints one JSON object.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import GRAPHS, bench_parser, emit, model_folder, scratch_dir, timed, workload  # noqa: E402

PROMPT = "a big red circle in the center, blue background"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--levels", default="none,basic,compile", help="engine levels to run (comma list)")
    args = parser.parse_args(argv)
    device, steps, size = workload(args)
    dtype = torch.float16 if args.sd15 and device != "cpu" else torch.float32
    with scratch_dir() as tmp:
        return run(args, tmp, device, dtype, steps, size)


def run(args: Any, tmp: Path, device: str, dtype: torch.dtype, steps: int, size: int) -> int:
    from diffusers import StableDiffusionPipeline
    from nodegraph_diffusion.schedulers import make_scheduler
    from nodegraph_diffusion.types import SchedulerSpec

    from nodegraph import Engine, RunOptions

    folder = model_folder(args.sd15, tmp)
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, torch_dtype=dtype,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    spec = SchedulerSpec("dpmpp_2m", tuple(sorted(dict(pipe.scheduler.config).items())))
    results: dict[str, Any] = {}
    images: dict[str, torch.Tensor] = {}

    def pipeline_once(seed: int) -> None:
        pipe.scheduler = make_scheduler(spec)
        out = pipe(PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=steps,
                   guidance_scale=7.5, generator=torch.Generator().manual_seed(seed), output_type="pt")
        images["last"] = out.images.float().cpu()

    def measure(name: str, once: Any) -> None:
        first = timed(device, lambda: once(0))
        reference = images["last"]
        times = [timed(device, lambda s=s: once(1000 + s)) for s in range(args.repeats)]
        t = statistics.median(times)
        results[name] = {"images_per_s": round(1 / t, 3), "steps_per_s": round(steps / t, 2),
                         "median_s": round(t, 4), "first_call_s": round(first, 3)}
        if "diffusers_default" in images:
            results[name]["max_abs_diff_vs_diffusers"] = float((reference - images["diffusers_default"]).abs().max())
        else:
            images["diffusers_default"] = reference

    measure("diffusers_default", pipeline_once)
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    pipe.fuse_qkv_projections()
    measure("diffusers_channels_last_fused_qkv", pipeline_once)
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

    overrides = {"model": str(folder), "steps": steps, "width": size, "height": size, "scheduler": "dpmpp_2m",
                 "cfg": 7.5, "prompt": PROMPT}  # the pipeline's guidance, not the demo graphs' default
    for level in args.levels.split(","):
        engine = Engine(cache_mb=0)  # every node runs every time; models stay resident
        options = RunOptions(out_dir=tmp / level, device=device, dtype="float16" if dtype == torch.float16
                             else "float32", show_progress=False, optimize=level)

        def engine_once(seed: int, engine: Engine = engine, options: RunOptions = options) -> None:
            result = engine.run(GRAPHS / "txt2img.yaml", {**overrides, "seed": seed}, options)
            images["last"] = result.outputs["image"]["out"].pixels
            compile_notes = [n for n in result.notes if "compiled" in n]
            if compile_notes:
                results.setdefault("compile_notes", []).extend(compile_notes)

        measure(f"engine_{level}", engine_once)
    base = results["diffusers_default"]["images_per_s"]
    for name, row in results.items():
        if isinstance(row, dict):
            row["speedup_vs_diffusers_default"] = round(row["images_per_s"] / base, 3)
    emit({"benchmark": "optimized", "model": "sd15-random-init" if args.sd15 else "builtin:tinyworld",
          "steps": steps, "size": f"{size}x{size}", "dtype": str(dtype).replace("torch.", ""), "cfg": 7.5,
          "scheduler": "dpmpp_2m", "repeats": args.repeats, "results": results}, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
