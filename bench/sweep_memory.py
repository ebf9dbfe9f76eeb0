"""Memory over a seed sweep on one engine: how much the result cache keeps, and process RSS.

    python bench/sweep_memory.py                      # 32 seeds of graphs/txt2img.yaml at 256x256
    python bench/sweep_memory.py --variants 64 --policy all

`--policy terminal` (the default policy) keeps outputs that only side-effect nodes read (the decoded
images feeding save_image) in 1/256 of the memory budget; `--policy all` gives them the whole budget,
as before that policy. Two untimed seeds run first (imports, model load). Prints one JSON object:
RSS before/after and per variant, the cache's bytes and entries, and an RSS sample per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodegraph.runtime.context import RunOptions  # noqa: E402
from nodegraph.runtime.engine import Engine  # noqa: E402
from nodegraph.sweep.runner import LocalExecutor, prepare_sweep, run_sweep  # noqa: E402
from nodegraph.sweep.spec import parse_axes  # noqa: E402
from nodegraph.sweep.worker import VariantJob, run_variant  # noqa: E402


def rss_mb() -> float:
    """Resident memory now (Linux /proc; the high-water mark elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SampledExecutor(LocalExecutor):
    """The local executor, sampling RSS after each variant."""

    samples: list[float]

    def run(self, jobs: list[VariantJob], on_done) -> None:  # type: ignore[no-untyped-def]
        self.samples = []
        for job in jobs:
            on_done(run_variant(self.engine, job, self.options))
            self.samples.append(round(rss_mb(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, default=ROOT / "graphs" / "txt2img.yaml")
    parser.add_argument("--variants", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cache-mb", type=float, default=2048)
    parser.add_argument("--policy", choices=("terminal", "all"), default="terminal")
    args = parser.parse_args()
    engine = Engine(cache_mb=args.cache_mb)
    if args.policy == "all":
        engine.cache.memory.terminal_max_bytes = engine.cache.memory.max_bytes
    fixed = {"steps": str(args.steps), "width": str(args.size), "height": str(args.size)}
    with tempfile.TemporaryDirectory(prefix="ng_bench_sweep_memory_") as tmp:
        options = RunOptions(out_dir=Path(tmp), show_progress=False)
        warm = prepare_sweep(engine, args.graph, parse_axes(["seed=100001..100002"]), False, fixed)
        run_sweep(warm, LocalExecutor(engine, options), Path(tmp) / "warm")
        rss0, bytes0 = rss_mb(), engine.cache.memory.bytes_used
        spec = prepare_sweep(engine, args.graph, parse_axes([f"seed=1..{args.variants}"]), False, fixed)
        executor = SampledExecutor(engine, options)
        t0 = time.perf_counter()
        run_sweep(spec, executor, Path(tmp) / "sweep")
        wall = time.perf_counter() - t0
    rss1 = rss_mb()
    memory = engine.cache.memory
    print(json.dumps({
        "graph": str(args.graph.relative_to(ROOT) if args.graph.is_relative_to(ROOT) else args.graph),
        "variants": args.variants, "size": args.size, "steps": args.steps, "policy": args.policy,
        "cache_mb": args.cache_mb, "terminal_budget_mb": round(memory.terminal_max_bytes / 2**20, 2),
        "rss_before_mb": round(rss0, 1), "rss_after_mb": round(rss1, 1),
        "rss_growth_mb": round(rss1 - rss0, 1),
        "rss_growth_per_variant_mb": round((rss1 - rss0) / args.variants, 3),
        "cache_growth_mb": round((memory.bytes_used - bytes0) / 2**20, 2),
        "cache_entries": len(memory), "wall_s": round(wall, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rss_samples_mb": executor.samples,
    }))


if __name__ == "__main__":
    main()
