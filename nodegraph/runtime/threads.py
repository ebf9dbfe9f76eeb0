"""How many CPU threads torch uses for one operation (intra-op), set before torch does any work.

Measured on a 2-core machine (bench/threads.py, figures in bench/README.md): with OpenMP's default
wait policy, threads that finish early spin for their siblings, so on cores shared with another
job two threads ran a tiny UNet forward many times slower than one; the PASSIVE policy (waiting
threads sleep) takes most of that back and costs little on idle cores. So the CLI asks OpenMP for
PASSIVE unless the user set a policy, and `--threads N` (or `$OMP_NUM_THREADS`) picks the count.
OpenMP reads its variables once, when torch loads it: they only work if set before `import torch`,
which is why this module never imports torch itself unless torch is already there.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"


def configure_threads(threads: int | None) -> int | None:
    """Apply `--threads` (None: keep torch's default or `$OMP_NUM_THREADS`); returns the count set.

    Sets `OMP_WAIT_POLICY=PASSIVE` when unset and torch is not loaded yet; with torch already
    imported (library use, tests) only the thread count can still change.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
    if threads is None:
        return None
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
    return threads
