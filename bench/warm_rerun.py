"""Benchmark: warm re-run after a seed change vs the cold run, same process (one Engine).

    python bench/warm_rerun.py                        # CPU, tiny model
    python bench/warm_rerun.py --sd15 --device cuda   # GPU, SD1.5-sized random init, 512x512, fp16

Cold: a fresh engine (models loaded, everything computed). Warm: the same engine, only `seed`
changed: the text encodings come from the cache, the models are resident, and only
noise -> sampler -> decode -> save should execute. Target: warm <= 10% of cold. Prints JSON.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import GRAPHS, bench_parser, emit, model_folder, scratch_dir, timed, workload  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--optimize", default="none")
    args = parser.parse_args(argv)
    device, steps, size = workload(args)
    with scratch_dir() as tmp:
        from nodegraph import Engine, RunOptions

        folder = model_folder(args.sd15, tmp)
        overrides = {"model": str(folder), "steps": steps, "width": size, "height": size}
        options = RunOptions(out_dir=tmp / "out", device=device, dtype="auto" if args.sd15 else "float32",
                             show_progress=False, optimize=args.optimize)
        colds, warms, executed = [], [], []
        for r in range(args.repeats):
            engine = Engine()
            colds.append(timed(device, lambda: engine.run(GRAPHS / "txt2img.yaml", {**overrides, "seed": 1},
                                                          options)))
            result = {}
            warms.append(timed(device, lambda r=r: result.setdefault(
                "r", engine.run(GRAPHS / "txt2img.yaml", {**overrides, "seed": 100 + r}, options))))
            executed = result["r"].executed
            del engine
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        cold, warm = statistics.median(colds), statistics.median(warms)
        emit({"benchmark": "warm_rerun", "model": "sd15-random-init" if args.sd15 else "builtin:tinyworld",
              "steps": steps, "size": f"{size}x{size}", "optimize": args.optimize, "repeats": args.repeats,
              "cold_median_s": round(cold, 4), "warm_median_s": round(warm, 4),
              "warm_over_cold": round(warm / cold, 4), "warm_executed": executed}, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
