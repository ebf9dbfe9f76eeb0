"""Start-up cost of whole `nodegraph` processes: `--help`, `validate`, and a cold headline run.

Each command runs as a fresh `python -m nodegraph ...` process (so every import is paid, as a user
pays it), the commands alternating so that a burst of load from other jobs spreads over all of them.
Prints one JSON object: min and median wall seconds per command, the load average before and after,
and the thread settings. The cold run gets a fresh, empty `--cache-dir` each time (and `--no-cache`
where the CLI has it), so a disk cache never turns it warm.

    python bench/startup.py                      # this checkout
    python bench/startup.py --root /tmp/before   # another checkout of nodegraph (e.g. a git worktree)

Deliberately imports nothing heavy itself: the figures are the child processes'.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = "graphs/controlnet_pose.yaml"


def commands(root: Path, scratch: Path, threads: int | None) -> dict[str, list[str]]:
    """The commands timed, by name; each gets its own fresh folders under `scratch`."""
    graph = str(root / HEADLINE)
    run = ["run", graph, "-q", "--out", str(scratch / "out"), "--cache-dir", str(scratch / "cache")]
    if threads is not None:
        run += ["--threads", str(threads)]
    return {
        "help": ["--help"],
        "validate": ["validate", graph],
        "nodes": ["nodes"],
        "run_cold": run,
    }


def child_env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a timed process: `root`'s packages first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "plugins"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def time_once(argv: list[str], root: Path, env: dict[str, str]) -> float:
    """Wall seconds of one `python -m nodegraph argv` process; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nodegraph", *argv], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="nodegraph checkout to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma-separated command names (help,validate,...)")
    parser.add_argument("--threads", type=int, default=None, help="pass --threads N to the run")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the child processes")
    args = parser.parse_args()
    root = args.root.resolve()
    extra = dict(item.split("=", 1) for item in args.env)
    env = child_env(root, extra)
    times: dict[str, list[float]] = {}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        scratch = Path(tempfile.mkdtemp(prefix="ng_startup_"))
        try:
            for name, argv in commands(root, scratch, args.threads).items():
                if args.only and name not in args.only.split(","):
                    continue
                times.setdefault(name, []).append(time_once(argv, root, env))
                shutil.rmtree(scratch / "out", ignore_errors=True)
                shutil.rmtree(scratch / "cache", ignore_errors=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "bench": "startup",
        "date": date.today().isoformat(),
        "root": str(root),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "env": extra,
        "threads": args.threads,
        "repeats": args.repeats,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": {name: {"min": round(min(ts), 3), "median": round(statistics.median(ts), 3),
                           "all": [round(t, 3) for t in ts]} for name, ts in times.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
