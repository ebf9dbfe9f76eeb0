"""Advice on speed options that cost more than they give on some devices, said before the cost is paid.

`--optimize compile` (and `max`) on the CPU: torch.compile took 197 s on an SD1.5 UNet and 31 s on the
tiny demo model for a 1.04x-1.28x faster step (bench/README.md), so within one run it cannot pay back
on the CPU; `basic` (channels-last, fused QKV) costs nothing up front and is the CPU recommendation.
"""

from __future__ import annotations

from typing import Any

COMPILING_LEVELS = ("compile", "max")


def compile_advice(level: str | None, device_type: str) -> str | None:
    """The warning to give before compiling at `level` on a device of `device_type`, or None."""
    if level not in COMPILING_LEVELS or device_type != "cpu":
        return None
    return (f"--optimize {level} on the CPU: torch.compile takes minutes the first time (197 s for an "
            "SD1.5 UNet) for a step about 1.04x faster, which does not pay back within a run; "
            "--optimize basic is the CPU recommendation")


def run_compile_advice(plan: Any, options: Any) -> str | None:
    """`compile_advice` for a whole run, before it starts: the level from `options` or the graph's
    `runtime:` block, the run's device resolved (torch is imported only when the level compiles)."""
    from nodegraph.runtime.placement import merged_options, runtime_settings

    merged = merged_options(options, runtime_settings(plan))
    if merged.optimize not in COMPILING_LEVELS:
        return None
    from nodegraph.runtime.devices import resolve_device

    return compile_advice(merged.optimize, resolve_device(merged.device).type)
