"""Benchmark: graphs/instruct_edit.yaml and graphs/upscale.yaml through the engine vs their pipelines.

`StableDiffusionInstructPix2PixPipeline` (three-branch guidance, one UNet call per step) and
`StableDiffusionUpscalePipeline` (x4: latents of the low-res picture's size, 4x decode) on the same
built-in stand-ins (builtin:tinyworld-ip2p, builtin:tinyworld-x4), prompt, picture, steps and seed. The
engine runs without its result cache (`cache_mb=0`) so every node runs every time; models stay resident
on both sides; runs alternate after a warm-up. Reports min and median seconds per run of each side,
and whether the last images were equal.

    python bench/concat_conditions.py                    # CPU, 64 px in, 10 steps, 5 repeats
    python bench/concat_conditions.py --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
from bench.common import emit, scratch_dir, sync  # noqa: E402

GRAPHS = ROOT / "graphs"
INSTRUCTION = "make the circle blue"
PROMPT = "a big red circle in the center, blue background"


def _pipelines(device: str) -> dict[str, Any]:
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionUpscalePipeline
    from nodegraph_diffusion.paths import BUILTIN_DIR

    ip2p = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        BUILTIN_DIR / "tinyworld-ip2p", local_files_only=True, safety_checker=None,
        requires_safety_checker=False).to(device)
    x4 = StableDiffusionUpscalePipeline.from_pretrained(BUILTIN_DIR / "tinyworld-x4",
                                                        local_files_only=True).to(device)
    for pipe in (ip2p, x4):
        pipe.set_progress_bar_config(disable=True)
    return {"instruct_edit": ip2p, "upscale": x4}


def _timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def bench(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image as PILImage

    from nodegraph import Engine, RunOptions

    device, steps = args.device, args.steps
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        picture = im.convert("RGB")
    pipes = _pipelines(device)
    engine = Engine(cache_mb=0)
    options = RunOptions(out_dir=tmp, device=device, dtype="float32", show_progress=False)
    calls = {
        "instruct_edit": lambda seed: pipes["instruct_edit"](
            INSTRUCTION, image=picture, num_inference_steps=steps, guidance_scale=7.5,
            image_guidance_scale=1.5, negative_prompt="",
            generator=torch.Generator().manual_seed(seed)).images[0],
        "upscale": lambda seed: pipes["upscale"](
            PROMPT, image=picture, num_inference_steps=steps, guidance_scale=9.0, noise_level=20,
            negative_prompt="", generator=torch.Generator().manual_seed(seed)).images[0],
    }
    report: dict[str, Any] = {}
    for graph, call in calls.items():
        def run_engine(seed: int, graph: str = graph) -> Any:
            engine.run(GRAPHS / f"{graph}.yaml", {"steps": steps, "seed": seed}, options)
            with PILImage.open(tmp / f"{graph}.png") as im:
                return np.asarray(im.convert("RGB"))

        def run_pipeline(seed: int, call: Callable[[int], Any] = call) -> Any:
            return np.asarray(call(seed))

        run_engine(0)
        run_pipeline(0)  # warm-up: loads, allocator
        times: dict[str, list[float]] = {"engine": [], "diffusers": []}
        images: dict[str, Any] = {}
        for i in range(args.repeats):
            order = [("engine", run_engine), ("diffusers", run_pipeline)]
            for name, run in order if i % 2 == 0 else order[::-1]:
                seconds, images[name] = _timed(device, lambda run=run, seed=1000 + i: run(seed))
                times[name].append(seconds)
        medians = {k: statistics.median(v) for k, v in times.items()}
        report[graph] = {
            "engine_min_s": round(min(times["engine"]), 4), "engine_median_s": round(medians["engine"], 4),
            "diffusers_min_s": round(min(times["diffusers"]), 4),
            "diffusers_median_s": round(medians["diffusers"], 4),
            "ratio_median": round(medians["engine"] / medians["diffusers"], 4),
            "pixels_equal": bool(np.array_equal(images["engine"], images["diffusers"])),
            "output": f"{images['engine'].shape[1]}x{images['engine'].shape[0]}",
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with scratch_dir() as tmp:
        report = bench(tmp, args)
    emit({"steps": args.steps, "repeats": args.repeats, "input": "64x64", **report}, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
