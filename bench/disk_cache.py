"""The default disk cache across processes: a second `nodegraph run` of the same graph vs the first.

    python bench/disk_cache.py                       # graphs/controlnet_pose.yaml, 5 repetitions
    python bench/disk_cache.py --graph graphs/txt2img.yaml --repeats 3 --threads 1

Each repetition runs whole processes (`python -m nodegraph run GRAPH -q --report`), as a user would:
`first` with an empty cache folder ($NODEGRAPH_CACHE_DIR, fresh per repetition), `second` right after
it on the same folder, and `no_cache` with `--no-cache` for reference. Prints one JSON object: wall
seconds min/median per kind, what the second run executed, whether it imported torch, and the
cache folder's size after the first run. Load average is reported: other work skews the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# runs the CLI in this process and records, at exit, whether torch was imported
_WRAPPER = """
import atexit, json, os, sys
def _record():
    with open(os.environ["NG_BENCH_PROBE"], "w") as f:
        json.dump({"torch_imported": "torch" in sys.modules}, f)
atexit.register(_record)
from nodegraph.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def _run(graph: Path, out: Path, cache: Path, extra: list[str], threads: int | None) -> dict[str, Any]:
    env = {**os.environ, "NODEGRAPH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "NG_BENCH_PROBE": str(out.parent / f"{out.name}.probe.json")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-c", _WRAPPER, "run", str(graph), "--out", str(out), "-q", "--report", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    probe = json.loads(Path(env["NG_BENCH_PROBE"]).read_text())
    return {"wall_s": wall, "executed": report["executed"], "cached": report["cached"], **probe}


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(list(folder.rglob("value.json")))


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3)}


def trim_scan(entries: int, repeats: int = 3) -> dict[str, Any]:
    """Seconds `DiskCache.trim` takes to scan a folder of `entries` small entries (nothing to evict):
    the cost each run that wrote something pays once at its end."""
    sys.path.insert(0, str(ROOT))
    from nodegraph.runtime.diskcache import DiskCache

    with tempfile.TemporaryDirectory(prefix="ng_bench_trim_") as tmp:
        disk = DiskCache(Path(tmp))
        for i in range(entries):
            disk.put(f"{i:064x}", {"out": i})
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            disk.trim(10**12)
            times.append(time.perf_counter() - t0)
    return {"entries": entries, **_stats(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, default=ROOT / "graphs" / "controlnet_pose.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    parser.add_argument("--trim-entries", type=int, default=0,
                        help="Only time the size-bound scan over this many synthetic entries")
    args = parser.parse_args()
    if args.trim_entries:
        print(json.dumps({"trim_scan_s": trim_scan(args.trim_entries)}, indent=2))
        return
    walls: dict[str, list[float]] = {"first": [], "second": [], "no_cache": []}
    last: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="ng_bench_disk_cache_"))
    try:
        for i in range(args.repeats):
            cache = tmp / f"cache{i}"
            first = _run(args.graph, tmp / f"first{i}", cache, [], args.threads)
            size, entries = _folder_bytes(cache)
            second = _run(args.graph, tmp / f"second{i}", cache, [], args.threads)
            plain = _run(args.graph, tmp / f"plain{i}", tmp / f"unused{i}", ["--no-cache"], args.threads)
            for kind, result in (("first", first), ("second", second), ("no_cache", plain)):
                walls[kind].append(result["wall_s"])
            last = {"first": first, "second": second, "no_cache": plain, "cache_bytes": size,
                    "cache_entries": entries}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "graph": str(args.graph.relative_to(ROOT) if args.graph.is_relative_to(ROOT) else args.graph),
        "repeats": args.repeats,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_s": {kind: _stats(values) for kind, values in walls.items()},
        "second_over_first_median": round(statistics.median(walls["second"])
                                          / statistics.median(walls["first"]), 3),
        "first_executed": last["first"]["executed"],
        "second_executed": last["second"]["executed"],
        "torch_imported": {kind: last[kind]["torch_imported"] for kind in ("first", "second", "no_cache")},
        "cache_after_first": {"bytes": last["cache_bytes"], "entries": last["cache_entries"]},
    }, indent=2))


if __name__ == "__main__":
    main()
