"""torch intra-op threads on this machine: 1 vs 2 (or --threads list), OpenMP's wait policy, idle vs busy.

Each configuration runs in a fresh process (OMP_* must be set before torch is imported): the
built-in tinyworld UNet, one CFG batch (2 x 4 x 8 x 8, 64 px) per forward, `--forwards` forwards
timed after a warm-up; "busy" runs a pure-Python busy loop on the side for the whole measurement
(another job on the same cores). Configurations alternate over `--repeats` rounds. Prints JSON:
min/median ms per forward per configuration, with the load average seen before each round, so a
figure taken on a machine shared with other jobs says so.

    python bench/threads.py                  # the table in bench/README.md
    python bench/threads.py --threads 1,2,4 --forwards 50
    python bench/threads.py --big --forwards 4 --repeats 2   # a real-sized UNet
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, torch
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/plugins"]
from diffusers import UNet2DConditionModel
from nodegraph_diffusion.paths import BUILTIN_DIR
torch.set_num_threads(int(sys.argv[1]))
folder = sys.argv[4] if sys.argv[4] != "-" else BUILTIN_DIR / "tinyworld"
unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
side = int(sys.argv[5])
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 4, side, side, generator=g)
e = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
t = torch.tensor(500)
with torch.no_grad():
    for _ in range(3):
        unet(x, t, e)
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        unet(x, t, e)
        times.append(time.perf_counter() - start)
print(sorted(times)[len(times) // 2] * 1000)
"""


def one(threads: int, passive: bool, busy: bool, forwards: int, folder: str = "-", side: int = 8) -> float:
    """Median ms per UNet forward of one fresh process in this configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        argv = [sys.executable, "-c", CHILD, str(threads), str(forwards), str(ROOT), folder, str(side)]
        out = subprocess.run(argv, env=env,
                             capture_output=True, text=True, check=True, timeout=600).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--forwards", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big", action="store_true",
                        help="a ~380 MB random UNet (as bench/owned_load.py builds) at 256 px, not tinyworld")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, side = "-", 8
        if args.big:
            sys.path.insert(0, str(ROOT / "bench"))
            from owned_load import build

            build(Path(tmp))
            folder, side = tmp, 32
        measure(args, folder, side)


def measure(args: argparse.Namespace, folder: str, side: int) -> None:
    """Every configuration, alternating over the rounds; prints the JSON result."""
    counts = [int(t) for t in args.threads.split(",")]
    configs = list(itertools.product(counts, (False, True), (False, True)))  # threads, passive, busy
    results: dict[str, list[float]] = {}
    loads: list[float] = []
    for _ in range(args.repeats):
        loads.append(round(os.getloadavg()[0], 2))
        for threads, passive, busy in configs:
            key = f"threads={threads} wait={'PASSIVE' if passive else 'default'} {'busy' if busy else 'idle'}"
            results.setdefault(key, []).append(one(threads, passive, busy, args.forwards, folder, side))
    print(json.dumps({
        "bench": "threads", "model": "big (~380 MB, 256 px)" if args.big else "tinyworld (64 px)",
        "cpus": os.cpu_count(), "forwards": args.forwards, "repeats": args.repeats,
        "loadavg_1min_before_rounds": loads,
        "ms_per_forward": {k: {"min": round(min(v), 2), "median": round(statistics.median(v), 2)}
                           for k, v in results.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
