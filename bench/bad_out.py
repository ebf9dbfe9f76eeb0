"""How long a user waits to learn that `--out` is unusable (an existing file): whole processes.

Before issue 16 the output folder was first touched when the first file was staged, so the error came
after the whole graph had computed (and as a traceback, exit 1); now it is checked before the packs or
the graph are loaded. Each repetition is a fresh `python -m nodegraph run GRAPH --out FILE` process.
Prints one JSON object: min and median wall seconds, the exit codes seen and the message's last line.

    python bench/bad_out.py                      # this checkout
    python bench/bad_out.py --root /tmp/before   # another checkout (e.g. `git archive` of an older commit)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="nodegraph checkout to time")
    parser.add_argument("--graph", default="graphs/txt2img.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = args.root.resolve()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "plugins"), env.get("PYTHONPATH", "")])
    times: list[float] = []
    codes: list[int] = []
    last = ""
    for _ in range(args.repeats):
        scratch = Path(tempfile.mkdtemp(prefix="ng_bad_out_"))
        try:
            target = scratch / "a_file"
            target.write_text("not a folder")
            argv = [sys.executable, "-m", "nodegraph", "run", str(root / args.graph), "-q",
                    "--out", str(target), "--cache-dir", str(scratch / "cache")]
            start = time.perf_counter()
            proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - start)
            codes.append(proc.returncode)
            last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({
        "bench": "bad_out",
        "date": date.today().isoformat(),
        "root": str(root),
        "graph": args.graph,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats,
        "seconds": {"min": round(min(times), 3), "median": round(statistics.median(times), 3),
                    "all": [round(t, 3) for t in times]},
        "exit_codes": codes,
        "last_line": last,
    }, indent=2))


if __name__ == "__main__":
    main()
