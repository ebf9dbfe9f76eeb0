"""Benchmark: a graph using two checkpoints in interleaved order — model loads with the swap-aware
order vs the plain (document-ordered) topological order, under a memory budget that holds one model
component at a time (so every switch between checkpoints costs a reload or an offload).

    python bench/model_swaps.py                        # CPU: two tiny models, RAM budget (drops+loads)
    python bench/model_swaps.py --sd15 --device cuda   # GPU: two SD1.5-sized models, VRAM budget

Prints JSON: loads, offloads, drops and wall time for each order; outputs are checked equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_parser, emit, scratch_dir, timed, workload  # noqa: E402


def two_models(tmp: Path, sd15: bool) -> tuple[Path, Path]:
    """Two checkpoints with different weights (different fingerprints)."""
    if sd15:
        from bench.txt2img import build_sd15

        a = build_sd15(tmp / "a")
        torch.manual_seed(1)
        return a, build_sd15(tmp / "b")
    from nodegraph_diffusion.tiny import save_tiny_model

    return save_tiny_model(tmp / "a", seed=0), save_tiny_model(tmp / "b", seed=1)


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__, repeats=None).parse_args(argv)
    device = workload(args)[0]
    with scratch_dir() as tmp:
        from diffusers import UNet2DConditionModel

        from nodegraph import Engine, RunOptions
        from nodegraph.runtime.residency import module_bytes
        from tests.engine.scheduler.test_order_and_budget_runs import TWO

        a, b = two_models(tmp, args.sd15)
        graph = tmp / "two.yaml"
        size = 512 if args.sd15 else 32
        graph.write_text(TWO.replace("width: 32, height: 32", f"width: {size}, height: {size}"))
        unet_bytes = module_bytes(UNet2DConditionModel.from_pretrained(a, subfolder="unet"),
                                  torch.float16 if args.sd15 else None)
        budget = int(unet_bytes * 1.05)
        rows = {}
        images = {}
        Engine().run(graph, {"a": str(a), "b": str(b)},  # warm-up: kernels, allocator, file cache
                     RunOptions(out_dir=tmp / "warm", device=device, show_progress=False))
        for order in ("smart", "document"):
            kwargs = {"vram_budget": budget} if device != "cpu" else {"ram_budget": budget}
            engine = Engine(**kwargs)
            options = RunOptions(out_dir=tmp / order, device=device, order=order, show_progress=False)
            box = {}
            wall = timed(device, lambda e=engine, o=options: box.setdefault(
                "r", e.run(graph, {"a": str(a), "b": str(b)}, o)))
            result = box["r"]
            images[order] = result.outputs["img_b"]["out"].pixels
            rows[order] = {k: result.resources[k] for k in ("loads", "offloads", "drops")}
            rows[order]["wall_s"] = round(wall, 3)
            rows[order]["peak_bytes"] = result.resources["peak_bytes"]
        emit({"benchmark": "model_swaps", "model": "sd15-random-init x2" if args.sd15 else "tiny x2",
              "budget_bytes": budget, "budget_kind": "ram" if device == "cpu" else "vram",
              "smart": rows["smart"], "naive": rows["document"],
              "outputs_equal": bool(torch.equal(images["smart"], images["document"]))}, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
