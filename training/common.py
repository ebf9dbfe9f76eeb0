"""Small shared pieces of the training scripts: logging to a file, thread settings, timing."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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
        self.start = time.monotonic()
        self.end = self.start + minutes * 60.0
        self.steps = steps

    def fraction(self, step: int) -> float:
        """How much of the budget is spent (0..1): drives a learning-rate decay that ends with the run."""
        return min(1.0, max(step / self.steps, (time.monotonic() - self.start) / (self.end - self.start)))

    def done(self, step: int) -> bool:
        """True once the step budget or the time budget is spent."""
        return step >= self.steps or time.monotonic() >= self.end


def lr_factor(step: int, warmup: int, deadline: Deadline, decay: bool) -> float:
    """Linear warm-up, then constant or (decay=True, used when resuming) cosine down to zero by the deadline."""
    ramp = min(1.0, (step + 1) / warmup)
    return ramp * (0.5 * (1.0 + math.cos(math.pi * deadline.fraction(step))) if decay else 1.0)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter],
                   sched: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """One update as every stage does it: backward, gradient norm clipped to 1, step, learning-rate schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    if sched is not None:
        sched.step()


class Progress:
    """What every stage does after a step: a smoothed loss, a log line every 50 steps, a checkpoint every
    `save_every` (so an interrupted run still leaves usable weights)."""

    def __init__(self, name: str, log: Callable[[str], None], save: Callable[[], None], save_every: int,
                 smoothing: float = 0.99) -> None:
        self.name, self.log, self.save, self.save_every, self.smoothing = name, log, save, save_every, smoothing
        self.running = 0.0

    def after(self, step: int, value: float) -> None:
        """Record step `step`'s (1-based) loss value."""
        self.running = value if step == 1 else self.smoothing * self.running + (1 - self.smoothing) * value
        if step % 50 == 0:
            self.log(f"{self.name} step {step} loss(ema) {self.running:.4f}")
        if step % self.save_every == 0:
            self.save()


def train_transformers_model(model: torch.nn.Module, save: Callable[[], None], log: Callable[[str], None],
                             name: str, batch_loss: Callable[[random.Random], torch.Tensor],
                             check: Callable[[], dict[str, dict[str, float]]], *, lr: float, minutes: float,
                             steps: int, save_every: int, seed: int, warmup: int = 200,
                             check_every: int = 500) -> int:
    """The loop the tiny CLIP, captioner and question answerer share: AdamW (weight decay 0.05, betas
    0.9/0.98), linear warm-up then cosine to zero by the deadline, gradients clipped to 1, checkpoints
    every `save_every` steps, and every `check_every` steps the held-out table `check()` logged.
    `batch_loss(rng)` draws a batch and returns its loss. Returns the number of steps taken."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    deadline = Deadline(minutes, steps)
    progress = Progress(name, log, save, save_every)
    rng, step = random.Random(seed), 0
    model.train()
    while not deadline.done(step):
        rate = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * deadline.fraction(step)))
        for group in opt.param_groups:
            group["lr"] = rate
        loss = batch_loss(rng)
        optimizer_step(loss, opt, model.parameters())
        step += 1
        progress.after(step, float(loss.detach()))
        if step % check_every == 0:
            log(f"step {step} lr {rate:.2e} held-out: " + ", ".join(
                f"{k} {v['accuracy']:.2f}" for k, v in check().items()))
            model.train()
    save()
    return step


def print_report(report: dict[str, Any], path: Path | None) -> None:
    """An evaluation's figures printed as JSON, and written to `path` when given (the logs/ record)."""
    text = json.dumps(report, indent=1)
    print(text)
    if path is not None:
        path.write_text(text + "\n", encoding="utf-8")
