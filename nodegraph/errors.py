"""The project's own error types.

Everything a user can cause (a bad graph, a missing file, an out-of-range value) is raised as a
`NodegraphError`; the CLI turns those into a message and exit code 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph, located as precisely as we can."""

    message: str
    file: str | None = None
    line: int | None = None
    node: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        subject = []
        if self.node:
            subject.append(f"node '{self.node}'")
        if self.field:
            subject.append(f"field '{self.field}'")
        head = ", ".join(subject)
        parts = [p for p in (where, head) if p]
        return (": ".join(parts) + ": " if parts else "") + self.message


class NodegraphError(Exception):
    """A user-facing error: the CLI prints it without a traceback and exits with code 2."""


class GraphError(NodegraphError):
    """A graph that cannot run, with every problem found (validation reports all at once)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InputError(NodegraphError):
    """Raised by a node when one of its inputs is unusable (missing file, corrupt weights, ...).

    Nodes name the field; the executor adds the node id and graph file.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class NodeFailed(NodegraphError):
    """An `InputError` located at its node and graph file by the executor."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class PluginError(NodegraphError):
    """A plugin pack that could not be loaded or that conflicts with another."""
