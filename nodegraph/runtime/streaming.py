"""Streaming: running a model that does not fit its device by moving parts of it there in turn.

The residency manager knows no model library, so a model that can run with only part of its weights
on the device comes with a `Streaming` adapter from its pack (the diffusion pack's wraps diffusers'
block-level group offloading). When such a model does not fit the room its device's budget leaves
(budget minus the pinned models), the manager asks the adapter to stream it within that room instead of
placing it whole past the budget; the weights then stay on the host and each group of blocks visits
the device only while it runs. When the model later fits whole, the manager asks the adapter to undo
the streaming first, then places it as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class StreamPlan:
    """How a model streams: the most bytes on the device at once, and a phrase for the run report."""

    resident_bytes: int  # the always-on part plus the largest group, at the placed dtype
    groups: int  # how many groups visit the device per forward call
    description: str  # e.g. "in groups of 4 blocks (210.3 MB per group)"


class Streaming(Protocol):
    """A pack's adapter that streams one kind of model to a device (stateless: the state is on the model)."""

    def stream(self, value: Any, onload_device: str, budget_bytes: int) -> StreamPlan:
        """Make `value` (its weights on the host) run on `onload_device` with at most `budget_bytes` of
        it there at once where it can (else as little as it can: the plan says how much)."""
        ...

    def unstream(self, value: Any) -> None:
        """Undo `stream`: `value` is an ordinary module again, its weights on the host."""
        ...
