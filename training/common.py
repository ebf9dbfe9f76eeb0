"""Small shared pieces of the training scripts: logging to a file, thread settings, timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

DEFAULT_RUNS = Path(__file__).parent / "runs"


def setup_threads(threads: int) -> None:
    """Pin torch to `threads` intra-op threads (the machine is shared; one core by default)."""
    torch.set_num_threads(max(1, threads))
    torch.set_num_interop_threads(1)


def make_logger(path: Path) -> Callable[[str], None]:
    """A print-and-append logger with elapsed seconds, so a background run can be watched with tail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def log(message: str) -> None:
        line = f"[{time.monotonic() - start:7.1f}s] {message}"
        print(line, flush=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    return log


class Deadline:
    """Stop a loop after `minutes` of wall-clock time or `steps` steps, whichever comes first."""

    def __init__(self, minutes: float, steps: int) -> None:
        self.end = time.monotonic() + minutes * 60.0
        self.steps = steps

    def done(self, step: int) -> bool:
        """True once the step budget or the time budget is spent."""
        return step >= self.steps or time.monotonic() >= self.end
