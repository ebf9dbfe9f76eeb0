"""What the residency manager did: counters, peaks, notes and an ordered log of residency events.

The event log is what makes the memory policy observable: a run report lists, in order, each model
loaded, placed on a device, offloaded to the host, dropped, streamed or unstreamed, with its name and
size, so "the text encoders left before the transformer came" is a fact one can read (and test).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodegraph.runtime.devices import format_size

if TYPE_CHECKING:
    from nodegraph.runtime.residency import ResidencyManager

# loaded (into host memory) | placed (whole, on a device) | offloaded (to the host, to make room) |
# dropped (removed for good) | streamed (run from the host in groups) | unstreamed (streaming undone)
EVENT_KINDS = ("loaded", "placed", "offloaded", "dropped", "streamed", "unstreamed")


@dataclass(frozen=True)
class ResidencyEvent:
    """One change of where a model is, in the order it happened."""

    event: str  # one of EVENT_KINDS
    model: str  # the component's name (e.g. text_encoder_2, transformer), else its residency key
    bytes: int  # its size where it went (streamed: the most of it on the device at once)
    device: str  # where it went (offloaded/dropped/unstreamed: where it left)
    key: str = ""
    detail: str = ""

    def row(self) -> dict[str, Any]:
        row = {"event": self.event, "model": self.model, "bytes": self.bytes, "device": self.device}
        if self.detail:
            row["detail"] = self.detail
        return row

    def text(self) -> str:
        """One line for people: `placed transformer (12.3 MB) on cuda:0`."""
        where = {"offloaded": "from", "dropped": "from", "unstreamed": "from"}.get(self.event, "on")
        tail = f" {self.detail}" if self.detail else ""
        return f"{self.event} {self.model} ({format_size(self.bytes)}) {where} {self.device}{tail}"


@dataclass
class ResidencyStats:
    """Counters since the manager was created; `since(snapshot)` gives one run's share."""

    loads: Counter[str] = field(default_factory=Counter)
    moves: int = 0
    evictions: int = 0  # entries removed for good (dropped past the RAM budget or max_entries)
    offloads: int = 0  # entries moved from an accelerator to the host to make room
    peak_bytes: dict[str, int] = field(default_factory=dict)  # per device: most bytes resident at once
    notes: list[str] = field(default_factory=list)
    events: list[ResidencyEvent] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {"loads": sum(self.loads.values()), "moves": self.moves, "evictions": self.evictions,
                "offloads": self.offloads, "notes": len(self.notes), "events": len(self.events)}

    def since(self, before: dict[str, Any]) -> dict[str, Any]:
        """What happened after `before` (a `snapshot()`): loads, offloads, drops, peaks, notes, events."""
        now = self.snapshot()
        return {
            "loads": now["loads"] - before["loads"],
            "moves": now["moves"] - before["moves"],
            "offloads": now["offloads"] - before["offloads"],
            "drops": now["evictions"] - before["evictions"],
            "streams": sum(e.event == "streamed" for e in self.events[before.get("events", 0):]),
            "peak_bytes": dict(self.peak_bytes),
            "notes": self.notes[before["notes"]:],
            "events": [e.row() for e in self.events[before.get("events", 0):]],
        }


def residency_report(manager: ResidencyManager, before: dict[str, Any]) -> dict[str, Any]:
    """One run's residency figures for the run report: loads, offloads, drops, peaks, budgets, notes.

    `peak_bytes` counts model weights resident per device; `cuda_peak_allocated` (when CUDA is in
    use) is torch's own high-water mark, activations included.
    """
    import sys

    report = manager.stats.since(before)
    locations = set(report["peak_bytes"]) | {manager.host}
    report["budgets"] = {loc: manager.budget(loc) for loc in sorted(locations)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        report["cuda_peak_allocated"] = int(torch.cuda.max_memory_allocated())
    return report
