"""Benchmark: Flux (or SD3.5) under a VRAM budget — the engine's residency manager vs diffusers' offloading.

    python bench/flux_memory.py                                   # CPU, a *reduced* Flux (see below)
    python bench/flux_memory.py --real-sizes --device cuda        # FLUX.1-dev architecture, 1024², bf16
    python bench/flux_memory.py --real-sizes --family sd35 --device cuda   # SD3.5-medium architecture

Sides, in one process, alternating repetitions after a warm-up (`--real-sizes`: one copy of the models
for the engine and one for diffusers, set up anew per side, each side's repetitions in a row — a copy
per side would not fit host RAM; `--one-copy` does that on the reduced model too), min and median
seconds per image:
- `engine` (graphs/flux.yaml or sd35.yaml, no budget), `engine_encoders_out` (budget = the transformer's
  size: the text encoders must leave before it is placed), `engine_streamed` (budget = what the rest of
  the transformer plus two blocks need: the manager streams it via diffusers' group offloading);
- `diffusers` (the pipeline, all on the device), `diffusers_model_offload`
  (`enable_model_cpu_offload`; on CPU it cannot run — the JSON says why), `diffusers_group_offload`
  (`transformer.enable_group_offload`, block level, the same blocks per group as the engine's).
Also: the peak bytes of model weights the manager had on the device (and torch's peak allocated on
CUDA; the process's peak RSS), the PNG max abs difference of each side to the plain pipeline, and the
smallest `--vram-budget` that completes within its budget (the transformer streamed one block at a
time beside the rest of it), checked by a run.

On CPU there is no second memory: as in bench/tight_memory.py the CPU plays the device and a
bookkeeping stand-in ("ram") plays host RAM, so budgets are exact bookkeeping with real modules but
transfers cost nothing; the figures show the policy and the hooks' overhead, not PCIe. The CPU model
is *reduced*: Flux.1's structure (4 double- + 8 single-stream blocks) at tiny widths, 128², 4 steps.
`--real-sizes` builds FLUX.1-dev (12 B transformer + T5-XXL 4.7 B, bench/flux.py) or SD3.5-medium
(2.5 B MMDiT, CLIP-L, CLIP-G, T5-XXL) from their published configs with random weights (weights do
not change FLOPs), 1024², bf16, for a CUDA machine; `--layers` cuts the depth. Prints JSON.
"""

from __future__ import annotations

import argparse
import resource
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
from bench.common import GRAPHS, emit, scratch_dir, sync  # noqa: E402

PROMPT = "a big red circle in the center, blue background"


def build_reduced_flux(folder: Path) -> Path:
    """Flux.1's structure at tiny widths, deep enough for groups of several blocks (CPU)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from nodegraph_diffusion.tiny import _init_
    from nodegraph_diffusion.tiny_flux import TRANSFORMER_CONFIG, build_tiny_flux_components
    from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

    parts = build_tiny_flux_components(seed=0)
    config = {**TRANSFORMER_CONFIG, "num_layers": 4, "num_single_layers": 8, "attention_head_dim": 32,
              "num_attention_heads": 4, "axes_dims_rope": (8, 12, 12)}
    transformer = FluxTransformer2DModel(**config, guidance_embeds=True)
    _init_(transformer, torch.Generator("cpu").manual_seed(1))
    parts["transformer"] = transformer.eval()
    FluxPipeline(**parts).save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder / "tokenizer")
    return folder


def engine_for(device: str, budget: int | None) -> Any:
    """The engine under `budget` bytes of VRAM; on CPU the CPU plays the device (see the docstring)."""
    from nodegraph import Engine
    from nodegraph.runtime.residency import ResidencyManager, move_module

    if device != "cpu":
        return Engine(cache_mb=0, vram_budget=budget)

    def mover(value: Any, where: str, dtype: Any) -> Any:
        return value if where == "ram" else move_module(value, where, dtype)

    return Engine(cache_mb=0, resources=ResidencyManager(vram_budget={"cpu": budget} if budget else None,
                                                         host="ram", mover=mover))


def png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def main(argv: list[str] | None = None) -> int:
    with scratch_dir("ng_flux_memory_") as tmp:
        return bench(tmp, argv)


def bench(tmp: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--real-sizes", action="store_true", help="FLUX.1-dev / SD3.5-medium architecture")
    parser.add_argument("--family", default="flux", choices=("flux", "sd35"), help="with --real-sizes")
    parser.add_argument("--layers", type=int, default=None, help="--real-sizes: cut the transformer's depth")
    parser.add_argument("--t5-layers", type=int, default=None, help="--real-sizes: T5 encoder layers")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda with --real-sizes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one-copy", action="store_true",
                        help="one engine and one pipeline set up anew per side (default with --real-sizes)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)

    from diffusers import FluxPipeline, StableDiffusion3Pipeline
    from nodegraph_diffusion.group_offload import block_layout

    from nodegraph import RunOptions
    from nodegraph.runtime.devices import device_key
    from nodegraph.runtime.residency import module_bytes

    device = args.device or ("cuda" if args.real_sizes else "cpu")
    dtype = torch.bfloat16 if args.real_sizes else torch.float32
    family = args.family if args.real_sizes else "flux"
    steps = args.steps or ((28 if family == "flux" else 40) if args.real_sizes else 4)
    size = args.size or (1024 if args.real_sizes else 128)
    if not args.real_sizes:
        folder = build_reduced_flux(tmp / "flux_reduced")
        what = "reduced Flux.1 (4+8 blocks, tiny widths), CPU"
    elif family == "flux":
        from bench.flux import build_flux_dev

        folder, what = build_flux_dev(tmp, dtype, args.layers, args.t5_layers), "FLUX.1-dev architecture"
    else:
        from bench.sd35 import build_sd35_medium

        folder, what = build_sd35_medium(tmp, dtype, args.layers, args.t5_layers), "SD3.5-medium architecture"
    pipe_cls = FluxPipeline if family == "flux" else StableDiffusion3Pipeline
    graph, image_name = (GRAPHS / "flux.yaml", "flux.png") if family == "flux" else (GRAPHS / "sd35.yaml",
                                                                                     "sd35.png")
    guidance = {"guidance": 3.5} if family == "flux" else {"cfg": 4.5}

    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    denoiser_cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:  # sizes from the config alone: no second copy of the weights
        with torch.device("meta"):
            transformer = denoiser_cls.from_config(denoiser_cls.load_config(folder, subfolder="transformer"))
    finally:
        torch.set_default_dtype(default)
    layout = block_layout(transformer)
    whole = module_bytes(transformer)
    del transformer
    per_group = 2
    budgets = {"engine": None, "engine_encoders_out": whole,
               "engine_streamed": layout.rest + layout.largest_group(per_group)}
    floor = layout.rest + layout.largest_group(1)  # the least block-level streaming can hold at once
    overrides = {"model": str(folder), "steps": steps, "width": size, "height": size, **guidance}
    options = {name: RunOptions(out_dir=tmp / name, device=device, dtype=str(dtype).replace("torch.", ""),
                                show_progress=False) for name in [*budgets, "floor"]}
    # real sizes: one engine and one pipeline, set up anew for each side, which then runs its repetitions
    # in a row (copies per side would need ~35 GB of host RAM each); reduced: a copy per side, alternating
    shared = args.real_sizes or args.one_copy
    one_engine = engine_for(device, None) if shared else None
    engines = {name: one_engine or engine_for(device, budget) for name, budget in budgets.items()}

    def pipeline() -> Any:
        pipe = pipe_cls.from_pretrained(folder, local_files_only=True, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def configure(pipe: Any, kind: str) -> None:
        from nodegraph_diffusion.group_offload import GroupOffload, is_streamed

        pipe.remove_all_hooks()
        if is_streamed(pipe.transformer):
            GroupOffload().unstream(pipe.transformer)
        if kind == "model_offload":
            pipe.enable_model_cpu_offload(device=device)
        elif kind == "group_offload":
            pipe.to("cpu")
            pipe.transformer.enable_group_offload(onload_device=torch.device(device), offload_device="cpu",
                                                  offload_type="block_level", num_blocks_per_group=per_group)
            for name, part in pipe.components.items():
                if name != "transformer" and isinstance(part, torch.nn.Module):
                    part.to(device)
        else:
            pipe.to(device)

    kinds = ("plain", "model_offload", "group_offload")
    base = pipeline() if shared else None
    pipes = {kind: base or pipeline() for kind in kinds}
    skipped: dict[str, str] = {}
    for kind in [] if shared else kinds:
        try:
            configure(pipes[kind], kind)
        except Exception as exc:  # noqa: BLE001 - say why a diffusers mode cannot run here
            skipped[f"diffusers_{kind}"] = f"{type(exc).__name__}: {exc}"
    results: dict[str, Any] = {}
    streamed: dict[str, list[str]] = {name: [] for name in budgets}  # over all runs (the hooks stay between)

    def set_budget(engine: Any, budget: int | None) -> None:
        """Give the engine `budget`; a changed one starts from everything on the host (as a new process
        would: the manager re-decides a model's place when it is next used, not when the budget moves)."""
        wanted = ({"cpu": budget} if budget else None) if device == "cpu" else budget
        if engine.resources.vram_budget != wanted:
            engine.resources.vram_budget = wanted
            engine.resources.offload_idle()

    def run_engine(name: str) -> Callable[[int], float]:
        def go(seed: int) -> float:
            set_budget(engines[name], budgets[name])
            sync(device)
            start = time.perf_counter()
            results[name] = engines[name].run(graph, {**overrides, "seed": seed}, options[name])
            sync(device)
            elapsed = time.perf_counter() - start
            events = results[name].resources["events"]
            streamed[name] += [e["detail"] for e in events if e["event"] == "streamed"]
            return elapsed
        return go

    def run_pipe(kind: str) -> Callable[[int], float]:
        def go(seed: int) -> float:
            kwargs = {"guidance_scale": 3.5} if family == "flux" else {"guidance_scale": 4.5}
            sync(device)
            start = time.perf_counter()
            image = pipes[kind](PROMPT, height=size, width=size, num_inference_steps=steps, **kwargs,
                                generator=torch.Generator().manual_seed(seed)).images[0]
            sync(device)
            elapsed = time.perf_counter() - start
            (tmp / kind).mkdir(exist_ok=True)
            image.save(tmp / kind / image_name)
            return elapsed
        return go

    sides: dict[str, Callable[[int], float]] = {name: run_engine(name) for name in budgets}
    sides.update({f"diffusers{'' if k == 'plain' else '_' + k}": run_pipe(k) for k in kinds
                  if f"diffusers_{k}" not in skipped})
    peaks: dict[str, list[float]] = {name: [] for name in sides}
    times: dict[str, list[float]] = {name: [] for name in sides}
    last = 1000 + args.repeats - 1

    def timed_run(name: str, seed: int) -> None:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times[name].append(sides[name](seed))
        if device.startswith("cuda"):
            peaks[name].append(torch.cuda.max_memory_allocated() / 2**30)

    if shared:
        for name in list(sides):
            kind = {"diffusers": "plain"}.get(name, name.removeprefix("diffusers_"))
            if kind in kinds:
                try:
                    configure(base, kind)
                except Exception as exc:  # noqa: BLE001 - say why a diffusers mode cannot run here
                    skipped[name] = f"{type(exc).__name__}: {exc}"
                    del sides[name]
                    continue
            sides[name](0)  # warm-up
            for i in range(args.repeats):
                timed_run(name, 1000 + i)
            sides[name](last)  # the same seed everywhere for the pixel comparison
    else:
        for side in sides.values():  # warm-up: loads, allocator, kernels
            side(0)
        order = list(sides)
        for i in range(args.repeats):
            for name in order[i % len(order):] + order[:i % len(order)]:
                timed_run(name, 1000 + i)
        for name in sides:  # the same seed everywhere for the pixel comparison
            sides[name](last)
    reference = png(tmp / "plain" / image_name) if "diffusers" in sides else None
    engine_floor = one_engine or engine_for(device, floor)
    set_budget(engine_floor, floor)
    floor_result = engine_floor.run(graph, {**overrides, "seed": last}, options["floor"])

    def side_dir(name: str) -> Path:
        return tmp / (name.removeprefix("diffusers_") if name.startswith("diffusers_") else
                      "plain" if name == "diffusers" else name)

    key = device_key(device)  # where the manager counts the device's bytes (cuda -> cuda:0)
    report: dict[str, Any] = {}
    for name in sides:
        row: dict[str, Any] = {"min_s": round(min(times[name]), 4),
                               "median_s": round(statistics.median(times[name]), 4)}
        row["s_per_step"] = round(row["median_s"] / steps, 4)
        if reference is not None:
            row["png_max_abs_vs_diffusers"] = int(np.abs(png(side_dir(name) / image_name) - reference).max())
        if name in budgets:
            res = results[name].resources
            row.update(budget_bytes=budgets[name], peak_weight_bytes_on_device=res["peak_bytes"].get(key),
                streamed=sorted(set(streamed[name])), streams=len(streamed[name]),
                last_run_events=[f"{e['event']} {e['model']}" for e in res["events"]])
        if peaks.get(name):
            row["cuda_peak_allocated_gib"] = round(max(peaks[name]), 2)
        report[name] = row
    floor_peak = floor_result.resources["peak_bytes"].get(key, 0)
    emit({
        "model": what, "family": family, "reduced": not args.real_sizes, "steps": steps,
        "size": f"{size}x{size}",
        "dtype": str(dtype).replace("torch.", ""), "repeats": args.repeats,
        "cpu_stand_in": device == "cpu",
        "transformer_bytes": whole, "transformer_outside_blocks_bytes": layout.rest,
        "blocks": [len(b) for b in layout.lists], "largest_block_bytes": layout.largest_group(1),
        "sides": report, "skipped": skipped, "alternating": not shared,
        "smallest_vram_budget_that_completes": {
            "bytes": floor, "peak_weight_bytes_on_device": floor_peak, "within_budget": floor_peak <= floor,
            "note": "the rest of the transformer + its largest block (streamed one block at a time); "
                    "below it a run still completes, past the budget, with a note",
            "png_max_abs_vs_diffusers": None if reference is None else
            int(np.abs(png(tmp / "floor" / image_name) - reference).max())},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
