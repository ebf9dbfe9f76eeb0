"""What a run did, node by node: executed or cached, wall time, peak memory; and the run's result."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NodeEvent:
    """One node's outcome in a run (a row of the run report)."""

    node: str
    type: str
    status: str  # "executed" | "cached"
    wall_ms: float
    peak_mb: float  # growth of the process's peak RSS during the call (and CUDA peak when used)
    key: str
    cuda_peak_mb: float | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """The outcome of `Engine.run`: outputs by node, what ran, what came from the cache, what was written."""

    outputs: dict[str, dict[str, Any]]
    events: list[NodeEvent]
    written: list[Path]
    wall_ms: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    # model residency during the run: loads, offloads, drops, peak bytes per device, budgets
    resources: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # fallbacks taken (tiled decode after OOM, ...)
    written_by: dict[Path, str] = field(default_factory=dict)  # written file -> id of the node that wrote it
    scores: dict[str, float] = field(default_factory=dict)  # node id -> figure reported with ctx.score()

    @property
    def executed(self) -> list[str]:
        return [e.node for e in self.events if e.status == "executed"]

    @property
    def cached(self) -> list[str]:
        return [e.node for e in self.events if e.status == "cached"]

    @property
    def report(self) -> list[dict[str, Any]]:
        """Per-node rows, in execution order."""
        return [e.row() for e in self.events]

    def report_json(self) -> dict[str, Any]:
        return {
            "nodes": self.report,
            "executed": self.executed,
            "cached": self.cached,
            "written": [str(p) for p in self.written],
            "wall_ms": round(self.wall_ms, 3),
            "versions": self.metadata.get("versions", {}),
            "resources": self.resources,
            "notes": self.notes,
            "scores": self.scores,
        }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to its final place and rename it there, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
