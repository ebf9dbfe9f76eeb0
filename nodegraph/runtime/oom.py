"""Out-of-memory fallback for any node: offload idle models, free the allocator's cache, retry once.

Node calls are functions of their inputs (a sampler re-seeds its generator from its `seed` input), so
a retry gives the result the first call would have given. Nodes with a cheaper way out (the VAE
decoder's tiled decode) handle their own OOM first; this is the engine-wide net under them. When the
retry fails too, the user gets a message that says what to try, not a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import RunContext

T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is torch's out-of-memory error (CUDA or MPS), without importing torch."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(resources: Any) -> int:
    """Offload every unpinned model to the host and empty the CUDA cache; returns models moved."""
    moved = int(resources.offload_idle()) if hasattr(resources, "offload_idle") else 0
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    return moved


def with_oom_retry(call: Callable[[], T], run: RunContext, node_id: str) -> T:
    """`call()`; on out-of-memory, free what can be freed, say so in the run notes, and call once more."""
    try:
        return call()
    except Exception as exc:
        if not is_oom(exc):
            raise
    moved = free_device_memory(run.resources)
    run.notes.append(f"{node_id}: out of memory; offloaded {moved} idle model(s) and retried")
    try:
        return call()
    except Exception as exc:
        if not is_oom(exc):
            raise
        raise NodegraphError(
            f"node '{node_id}' ran out of memory even with every other model offloaded; try a lower "
            "--vram-budget, a smaller image or batch, `tiled: true` on diffusion.vae_decode, or "
            "--dtype float16") from exc
