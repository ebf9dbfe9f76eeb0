"""Benchmark: warm re-run after a seed change vs the cold run, same process (one Engine).

    python bench/warm_rerun.py                        # CPU, tiny model
    python bench/warm_rerun.py --sd15 --device cuda   # GPU, SD1.5-sized random init, 512x512, fp16

Cold: a fresh engine (models loaded, everything computed). Warm: the same engine, only `seed`
changed: the text encodings come from the cache, the models are resident, and only
noise -> sampler -> decode -> save should execute. Target: warm <= 10% of cold. Prints JSON.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import GRAPHS, emit, model_folder, timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--optimize", default="none")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if args.sd15 else "cpu")
    steps, size = (30, 512) if args.sd15 else (20, 64)
    tmp = Path(tempfile.mkdtemp(prefix="ng_bench_"))
    try:
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
