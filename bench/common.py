"""Shared pieces of the benchmark scripts: the model to use, timing with device sync, JSON output.

Every script runs on CPU with the built-in tiny model by default and on a GPU with `--sd15 --device
cuda` (SD1.5-sized random-init model built from configs, no download — weights don't change FLOPs).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
GRAPHS = ROOT / "graphs"


def model_folder(sd15: bool, tmp: Path) -> Path:
    """The SD1.5-sized random model (built into `tmp`) or the built-in tiny one."""
    from nodegraph_diffusion.paths import BUILTIN_DIR

    if not sd15:
        return BUILTIN_DIR / "tinyworld"
    from bench.txt2img import build_sd15

    return build_sd15(tmp)


def bench_parser(doc: str | None, repeats: int | None = 3) -> argparse.ArgumentParser:
    """A parser with the options every script takes: --sd15, --device (and --repeats)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--sd15", action="store_true",
                        help="SD1.5-sized random-init model, 512x512, 30 steps")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda with --sd15, else cpu)")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats)
    return parser


def workload(args: argparse.Namespace) -> tuple[str, int, int]:
    """(device, steps, size): SD1.5-sized at 512x512 and 30 steps, else the tiny model at 64x64 and 20."""
    device = args.device or ("cuda" if args.sd15 else "cpu")
    steps, size = (30, 512) if args.sd15 else (20, 64)
    return device, steps, size


@contextmanager
def scratch_dir(prefix: str = "ng_bench_") -> Iterator[Path]:
    """A temporary folder for the models a benchmark builds and the files it writes, removed after."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> float:
    """Seconds one call takes, with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def emit(data: dict[str, Any], device: str) -> None:
    """Print one JSON object with the device, date and versions added."""
    import diffusers

    print(json.dumps({"device": device_name(device), "date": date.today().isoformat(),
                      "torch": torch.__version__, "diffusers": diffusers.__version__, **data}))


def peak_gib(device: str) -> float | None:
    """The device's peak allocated GiB since the last call (None off CUDA), then reset."""
    if not device.startswith("cuda"):
        return None
    value = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return round(value, 2)


def alternate(runs: dict[str, Callable[[int], Any]], repeats: int, device: str) -> dict[str, Any]:
    """Time each side once to warm up, then `repeats` rounds in alternating order (seed 1000 + round), so
    a noisy neighbour slows both sides alike. Min and median seconds and the peak GiB of each side."""
    import statistics

    for run in runs.values():
        run(0)  # warm-up: loads, allocator, kernels
    peak_gib(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[float | None]] = {name: [] for name in runs}
    order = list(runs.items())
    for i in range(repeats):
        for name, run in order if i % 2 == 0 else order[::-1]:
            times[name].append(timed(device, lambda run=run, i=i: run(1000 + i)))
            peaks[name].append(peak_gib(device))
    return {name: {"min_s": round(min(t), 4), "median_s": round(statistics.median(t), 4),
                   "peak_gib": max((p for p in peaks[name] if p is not None), default=None)}
            for name, t in times.items()}


def engine_vs_diffusers(sides: dict[str, Any], steps: int) -> dict[str, Any]:
    """The figures a graph-vs-pipeline script reports from `alternate`'s result: min and median of each
    side, the ratio of medians and seconds per step (the whole run divided by the steps)."""
    engine_s, pipe_s = sides["engine"]["median_s"], sides["diffusers"]["median_s"]
    return {"engine_min_s": sides["engine"]["min_s"], "engine_median_s": engine_s,
            "diffusers_min_s": sides["diffusers"]["min_s"], "diffusers_median_s": pipe_s,
            "ratio_median": round(engine_s / pipe_s, 4),
            "engine_s_per_step": round(engine_s / steps, 4), "diffusers_s_per_step": round(pipe_s / steps, 4),
            "peak_gib": {name: side["peak_gib"] for name, side in sides.items()}}
