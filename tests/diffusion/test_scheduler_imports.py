"""diffusers' scheduler modules import scipy.stats at the top; we defer it to its one use (beta sigmas).

Checked in fresh interpreters: a run's usual scheduler leaves scipy.stats unimported, and beta sigmas
(the only caller) come out equal to those computed with scipy.stats imported up front.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
if sys.argv[1] == "eager":
    import scipy.stats  # noqa: F401
from nodegraph_diffusion.paths import BUILTIN_DIR
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.types import SchedulerSpec
cfg = json.loads((BUILTIN_DIR / "tinyworld" / "scheduler" / "scheduler_config.json").read_text())
base = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))
plain = make_scheduler(SchedulerSpec("dpmpp_2m", base))
plain.set_timesteps(20)
loaded_after_plain = "scipy.stats._stats_py" in sys.modules
beta = make_scheduler(SchedulerSpec("dpmpp_2m", base, (("use_beta_sigmas", True),)))
beta.set_timesteps(20)
print(json.dumps({"after_plain": loaded_after_plain, "sigmas": beta.sigmas.tolist()}))
"""


def run(mode: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_scipy_stats_waits_for_beta_sigmas() -> None:
    deferred, eager = run("deferred"), run("eager")
    assert deferred["after_plain"] is False
    assert eager["after_plain"] is True  # the probe sees scipy.stats when it is there
    assert deferred["sigmas"] == eager["sigmas"]
