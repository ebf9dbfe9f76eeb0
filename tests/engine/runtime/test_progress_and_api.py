"""Progress events reach the sink (rich bars in the CLI), cancellation, and the library conveniences."""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import pytest
from pydantic import Field
from rich.console import Console

import nodegraph
from nodegraph import Engine, RunOptions
from nodegraph.api import NodeContext, node
from nodegraph.nodes.registry import PackSource, Registry, build_registry
from nodegraph.runtime.context import Cancelled
from nodegraph.runtime.progress import RichProgress
from nodegraph.runtime.report import NodeEvent
from nodegraph.testing import ToyPack
from tests.engine.runtime.conftest import make_plan

ROOT = Path(__file__).resolve().parents[3]


def steps_registry() -> Registry:
    @node("steps.count", version="1.0.0")
    def count(ctx: NodeContext, steps: Annotated[int, Field(ge=1, description="Steps to take")]) -> int:
        """Advance a progress bar `steps` times."""
        with ctx.progress(steps, "stepping") as advance:
            for _ in range(steps):
                advance()
        return steps

    module = ModuleType("steps_nodes")
    count.__module__ = module.__name__
    module.count = count  # type: ignore[attr-defined]
    return build_registry([PackSource("steps", "1", "steps_nodes", lambda: ToyPack(module))])


class Recorder:
    """A progress sink and run observer that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def run_started(self, total: int) -> None:
        self.calls.append(("run", total))

    def node_started(self, node_id: str, type_name: str) -> None:
        self.calls.append(("start", node_id))

    def node_finished(self, event: NodeEvent) -> None:
        self.calls.append(("done", event.node, event.status))

    def start_task(self, node_id: str, description: str, total: int) -> Any:
        self.calls.append(("task", node_id, description, total))
        return node_id

    def advance(self, task: Any, amount: int = 1) -> None:
        self.calls.append(("advance", task))

    def finish_task(self, task: Any) -> None:
        self.calls.append(("finish", task))


def test_progress_events_in_order(tmp_path: Path) -> None:
    registry = steps_registry()
    recorder = Recorder()
    Engine(registry).run(make_plan(registry, {"c": {"type": "steps.count", "steps": 3}}),
                         options=RunOptions(out_dir=tmp_path), progress=recorder)
    assert recorder.calls == [("run", 1), ("start", "c"), ("task", "c", "stepping", 3),
                              ("advance", "c"), ("advance", "c"), ("advance", "c"), ("finish", "c"),
                              ("done", "c", "executed")]


def test_rich_progress_renders(tmp_path: Path) -> None:
    registry = steps_registry()
    buffer = io.StringIO()
    with RichProgress(Console(file=buffer, force_terminal=True, width=100)) as bars:
        result = Engine(registry).run(make_plan(registry, {"c": {"type": "steps.count", "steps": 2}}),
                                      options=RunOptions(out_dir=tmp_path), progress=bars)
    assert result.outputs["c"]["out"] == 2
    assert "graph" in buffer.getvalue()


def test_cancel_event_stops_at_next_step(tmp_path: Path) -> None:
    registry = steps_registry()

    from nodegraph.runtime.context import RunContext
    from nodegraph.runtime.residency import ResidencyManager

    run = RunContext(RunOptions(out_dir=tmp_path), ResidencyManager(), tmp_path / "stage")
    ctx = run.for_node("c", "steps.count")
    spec = registry.get("steps.count")
    assert spec is not None
    run.cancel_event.set()
    with pytest.raises(Cancelled):
        spec.call(ctx, {"steps": 2})


def test_library_conveniences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = nodegraph.load(ROOT / "graphs" / "core_text.yaml")
    assert list(plan.nodes) == ["subject", "style", "quality", "prompt"]
    result = nodegraph.run(ROOT / "graphs" / "core_text.yaml", subject="a green cube",
                           options=RunOptions(out_dir=tmp_path / "o"))
    assert result.outputs["prompt"]["out"] == "a green cube, flat colours, sharp, high detail"
    assert result.metadata["params"] == {"subject": "a green cube", "style": "flat colours"}
