"""Benchmark: txt2img under a tight VRAM budget vs no budget — peak memory and slowdown.

    python bench/tight_memory.py --sd15 --device cuda --vram-budget 2GB   # the issue's GPU case
    python bench/tight_memory.py                                          # CPU stand-in (see below)

On a GPU the residency manager keeps at most the budget of model weights on the device, offloading
least-recently-used components (text encoder, UNet, VAE move independently) to CPU RAM; the JSON
gives peak resident weights, torch's peak allocated memory (activations included), offloads and the
wall time against an unbudgeted run. On CPU there is no second memory, so the CPU variant lets the
CPU play the device and a bookkeeping stand-in play host RAM: it checks the policy (budget respected,
outputs equal) and its overhead, not transfer costs. Prints JSON.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import GRAPHS, bench_parser, emit, model_folder, scratch_dir, timed, workload  # noqa: E402


def engine_for(device: str, budget: int | None) -> Any:
    from nodegraph import Engine
    from nodegraph.runtime.residency import ResidencyManager, move_module

    if device != "cpu":
        return Engine(vram_budget=budget)

    def mover(value: Any, where: str, dtype: Any) -> Any:
        return value if where == "ram" else move_module(value, where, dtype)

    return Engine(resources=ResidencyManager(vram_budget={"cpu": budget} if budget else None, host="ram",
                                             mover=mover))


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--vram-budget", default=None, help="e.g. 2GB (default: the UNet's size + 5%%)")
    args = parser.parse_args(argv)
    device, steps, size = workload(args)
    with scratch_dir() as tmp:
        from diffusers import UNet2DConditionModel

        from nodegraph import RunOptions
        from nodegraph.runtime.devices import parse_size
        from nodegraph.runtime.residency import module_bytes

        folder = model_folder(args.sd15, tmp)
        half = device != "cpu" and args.sd15
        unet = module_bytes(UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
                            torch.float16 if half else None)
        budget = parse_size(args.vram_budget) if args.vram_budget else int(unet * 1.05)
        overrides = {"model": str(folder), "steps": steps, "width": size, "height": size}
        options = RunOptions(out_dir=tmp / "out", device=device, dtype="float16" if half else "float32",
                             show_progress=False)
        rows: dict[str, Any] = {}
        images = {}
        for name, limit in (("no_budget", None), ("budget", budget)):
            engine = engine_for(device, limit)
            box: dict[str, Any] = {}
            engine.run(GRAPHS / "txt2img.yaml", {**overrides, "seed": 0}, options)  # load, warm up
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            # a new prompt each time: the text encoder runs too, so components must take turns
            times = [timed(device, lambda s=s, e=engine: box.__setitem__("r", e.run(
                GRAPHS / "txt2img.yaml", {**overrides, "seed": s, "prompt": f"a red circle {s}"}, options)))
                for s in range(1, args.repeats + 1)]
            result = box["r"]
            images[name] = result.outputs["image"]["out"].pixels
            rows[name] = {"median_s": round(statistics.median(times), 4),
                          "peak_resident_bytes": result.resources["peak_bytes"],
                          "offloads_last_run": result.resources["offloads"],
                          "cuda_peak_allocated": result.resources.get("cuda_peak_allocated")}
            del engine
        emit({"benchmark": "tight_memory", "model": "sd15-random-init" if args.sd15 else "builtin:tinyworld",
              "steps": steps, "size": f"{size}x{size}", "budget_bytes": budget, "unet_bytes": unet,
              "no_budget": rows["no_budget"], "budget": rows["budget"],
              "slowdown": round(rows["budget"]["median_s"] / rows["no_budget"]["median_s"], 3),
              "outputs_equal": bool(torch.equal(images["no_budget"], images["budget"]))}, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
