"""Sweep throughput: local executor vs Ray workers on this machine; prints JSON.

    python bench/sweep.py                      # 16 seeds of graphs/txt2img.yaml on builtin:tinyworld, CPU
    python bench/sweep.py --variants 32 --steps 20 --workers 2
    python bench/sweep.py --device cuda        # on a GPU machine: one Ray worker per GPU (default)

Steady-state figures: the local executor runs after an untimed variant has imported the model
libraries (it still loads the tiny model once, ~0.1 s); the Ray workers run a short warm-up sweep on
other seeds first. Ray's init, actor start-up and warm-up are reported apart. The per-variant overhead
Ray adds is the driver's round trip for a variant minus the worker's own time for it (median, p90).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from nodegraph.errors import NodegraphError  # noqa: E402
from nodegraph.nodes.registry import build_registry  # noqa: E402
from nodegraph.runtime.context import RunOptions  # noqa: E402
from nodegraph.runtime.engine import Engine  # noqa: E402
from nodegraph.sweep.runner import LocalExecutor, SweepSpec, prepare_sweep, run_sweep  # noqa: E402
from nodegraph.sweep.spec import parse_axes  # noqa: E402
from nodegraph.sweep.worker import run_variant  # noqa: E402


def _per_minute(count: int, seconds: float) -> float:
    return round(count / seconds * 60, 1) if seconds > 0 else float("inf")


def bench_local(spec: SweepSpec, options: RunOptions, out: Path) -> dict[str, Any]:
    engine = Engine(build_registry())
    t0 = time.perf_counter()
    summary = run_sweep(spec, LocalExecutor(engine, options), out)
    wall = time.perf_counter() - t0
    variant_ms = [e["timings"]["wall_ms"] for e in summary.entries]
    return {"variants": summary.ran, "torch_threads": torch.get_num_threads(), "wall_s": round(wall, 3),
            "images_per_minute": _per_minute(summary.ran, wall),
            "first_variant_ms": round(variant_ms[0], 3),
            "ms_per_variant_median": round(statistics.median(variant_ms), 3)}


def bench_ray(spec: SweepSpec, warmup: SweepSpec, options: RunOptions, out: Path,
              workers: int | None) -> dict[str, Any]:
    """Ray: start-up, a cold warm-up sweep (other seeds: each worker imports libraries and loads the
    model), then the timed sweep on the same, now warm, workers."""
    from nodegraph.sweep.ray_executor import RayExecutor, ray_session

    t0 = time.perf_counter()
    with ray_session(None) as ray:
        started = time.perf_counter()
        executor = RayExecutor(options, workers=workers)
        executor.start()
        ready = time.perf_counter()
        try:
            cold = run_sweep(warmup, executor, out / "cold")
            cold_wall = time.perf_counter() - ready
            t1 = time.perf_counter()
            summary = run_sweep(spec, executor, out / "warm")
            wall = time.perf_counter() - t1
        finally:
            executor.stop()
        resources = ray.cluster_resources()
    overheads = sorted(e["timings"]["overhead_ms"] for e in summary.entries)
    worker_ms = [e["timings"]["wall_ms"] for e in summary.entries]
    return {
        "workers": len({e["worker"] for e in summary.entries}),
        "cluster": {k: resources[k] for k in ("CPU", "GPU") if k in resources},
        "variants": summary.ran,
        "ray_init_s": round(started - t0, 3),
        "actor_startup_s": round(ready - started, 3),
        "warmup_variants": cold.ran,
        "warmup_wall_s": round(cold_wall, 3),
        "first_variant_ms_max": round(max(e["timings"]["wall_ms"] for e in cold.entries), 3),
        "wall_s": round(wall, 3),
        "images_per_minute": _per_minute(summary.ran, wall),
        "worker_ms_per_variant_median": round(statistics.median(worker_ms), 3),
        "overhead_ms_per_variant_median": round(statistics.median(overheads), 3),
        "overhead_ms_per_variant_p90": round(overheads[int(0.9 * (len(overheads) - 1))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, default=ROOT / "graphs" / "txt2img.yaml")
    parser.add_argument("--variants", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: per GPU/CPU slot)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    engine = Engine(build_registry())
    fixed = {"steps": str(args.steps)}
    spec = prepare_sweep(engine, args.graph, parse_axes([f"seed=1..{args.variants}"]), False, fixed)
    warmup = prepare_sweep(engine, args.graph, parse_axes(["seed=100001..100004"]), False, fixed)
    options = RunOptions(device=args.device)
    report: dict[str, Any] = {
        "graph": str(args.graph.relative_to(ROOT) if args.graph.is_relative_to(ROOT) else args.graph),
        "variants": len(spec.variants),
        "steps": args.steps,
        "device": args.device,
        "cuda_devices": torch.cuda.device_count(),
        "cpu_count": os.cpu_count(),
    }
    report["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine skews figures
    with tempfile.TemporaryDirectory(prefix="nodegraph-bench-sweep-") as tmp:
        # import the model libraries once, untimed: a Ray worker pays that in its start-up
        run_variant(Engine(build_registry()), spec.job(spec.variants[0]), options)
        report["local"] = bench_local(spec, options, Path(tmp) / "local")
        threads = torch.get_num_threads()
        if threads > 1:  # the same work with one thread, as each CPU Ray worker computes
            torch.set_num_threads(1)
            report["local_1_thread"] = bench_local(spec, options, Path(tmp) / "local1")
            torch.set_num_threads(threads)
        if not args.skip_ray:
            try:
                report["ray"] = bench_ray(spec, warmup, options, Path(tmp) / "ray", args.workers)
            except NodegraphError as exc:  # Ray not installed
                report["ray"] = {"skipped": str(exc)}
    if "images_per_minute" in report.get("ray", {}):
        # against the faster local figure: with other work on the machine, 2 torch threads can be far
        # slower than 1 (threads wait on each other), which would flatter Ray
        ray_rate = report["ray"]["images_per_minute"]
        local_rate = max(report[k]["images_per_minute"] for k in ("local", "local_1_thread") if k in report)
        report["ray_speedup_vs_best_local"] = round(ray_rate / local_rate, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
