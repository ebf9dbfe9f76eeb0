"""Progress shown with rich: one bar for the graph (nodes done / total) and one per long node.

Implements both `ProgressSink` (bars that nodes open through `ctx.progress`) and the executor's
`RunObserver` (graph-level events). Use it as a context manager around `Engine.run`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nodegraph.runtime.report import NodeEvent


class RichProgress:
    """Rich progress bars for one run (or several in a row)."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._graph: Any = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    # RunObserver
    def run_started(self, total: int) -> None:
        if self._graph is not None:
            self.progress.remove_task(self._graph)
        self._graph = self.progress.add_task("graph", total=total)

    def node_started(self, node_id: str, type_name: str) -> None:
        if self._graph is not None:
            self.progress.update(self._graph, description=f"graph: {node_id} ({type_name})")

    def node_finished(self, event: NodeEvent) -> None:
        if self._graph is not None:
            self.progress.advance(self._graph)

    # ProgressSink
    def start_task(self, node_id: str, description: str, total: int) -> Any:
        return self.progress.add_task(f"  {node_id}: {description}", total=total)

    def advance(self, task: Any, amount: int = 1) -> None:
        self.progress.advance(task, amount)

    def finish_task(self, task: Any) -> None:
        self.progress.remove_task(task)
