"""How the CLI talks: problems in red on stderr (no traceback), the run report table, written files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nodegraph.errors import GraphError, NodeFailed, NodegraphError, Problem
from nodegraph.runtime.context import Cancelled
from nodegraph.runtime.report import RunResult

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles; created per command, never at import."""
    return Console(), Console(stderr=True)


def problems_of(exc: NodegraphError) -> list[Problem | str]:
    if isinstance(exc, GraphError):
        return list(exc.problems)
    if isinstance(exc, NodeFailed):
        return [exc.problem]
    return [str(exc)]


def print_problems(err: Console, problems: list[Problem | str]) -> None:
    """Each problem on its own line, in red."""
    for problem in problems:
        err.print(f"[red]{escape(str(problem))}[/red]", soft_wrap=True, highlight=False)


@contextmanager
def user_errors(err: Console, interrupted_message: str = "interrupted, nothing written") -> Iterator[None]:
    """Turn user-caused errors into a message and exit code 2, and Ctrl-C into exit code 130."""
    try:
        yield
    except (KeyboardInterrupt, Cancelled):
        err.print(f"[yellow]{interrupted_message}[/yellow]", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except NodegraphError as exc:
        print_problems(err, problems_of(exc))
        raise typer.Exit(EXIT_USER_ERROR) from None


def report_table(result: RunResult) -> Table:
    """One row per node: id, type, cached/executed, wall ms, peak MB."""
    table = Table(title="run report", title_justify="left")
    table.add_column("node")
    table.add_column("type")
    table.add_column("status")
    table.add_column("wall ms", justify="right")
    table.add_column("peak MB", justify="right")
    for event in result.events:
        style = "dim" if event.status == "cached" else ""
        peak = event.peak_mb if event.cuda_peak_mb is None else max(event.peak_mb, event.cuda_peak_mb)
        table.add_row(event.node, event.type, event.status, f"{event.wall_ms:.1f}", f"{peak:.1f}",
                      style=style)
    return table
