"""`--threads N` reaches torch; OpenMP's wait policy is set before torch loads (runtime/threads.py).

Each case runs in a fresh interpreter: OpenMP reads its environment once, when torch is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import json, os, runpy, sys
argv = json.loads(sys.argv[1])
sys.argv = ["nodegraph", *argv]
code = 0
try:
    runpy.run_module("nodegraph", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 0
import torch
print(json.dumps({"code": code, "threads": torch.get_num_threads(),
                  "policy": os.environ.get("OMP_WAIT_POLICY")}), file=sys.__stderr__)
"""


def run(argv: list[str], tmp_path: Path, **env: str) -> dict[str, object]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")} | env
    full_env["NODEGRAPH_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120, check=False)
    return json.loads(proc.stderr.strip().splitlines()[-1])  # type: ignore[no-any-return]


def graph_args(tmp_path: Path) -> list[str]:
    return ["run", str(ROOT / "graphs" / "core_text.yaml"), "-q", "--out", str(tmp_path / "out")]


def test_threads_option_sets_torch_threads_and_passive_wait(tmp_path: Path) -> None:
    result = run([*graph_args(tmp_path), "--threads", "1"], tmp_path)
    assert result == {"code": 0, "threads": 1, "policy": "PASSIVE"}


def test_default_keeps_torch_threads_and_a_users_wait_policy(tmp_path: Path) -> None:
    plain = run(graph_args(tmp_path), tmp_path, OMP_WAIT_POLICY="ACTIVE")
    assert plain["code"] == 0 and plain["policy"] == "ACTIVE"
    assert plain["threads"] == run(["--help"], tmp_path)["threads"]  # torch's own default, untouched


def test_threads_below_one_is_a_usage_error(tmp_path: Path) -> None:
    assert run([*graph_args(tmp_path), "--threads", "0"], tmp_path)["code"] == 2
