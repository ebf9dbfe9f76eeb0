"""`nodegraph watch GRAPH`: run a graph, then re-run it whenever a file it depends on changes.

One `Engine` lives for the whole session, so models stay resident and the result cache stays warm:
a re-run executes only the nodes whose inputs changed (an edited prompt re-runs the text encoder and
what follows; an edited input image re-runs the nodes that read it). Files are polled by modification
time and size (no extra dependency, works on network drives): the graph file, an optional params file
(a YAML/JSON mapping of param overrides), and every input file the graph's nodes read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodegraph.document.plan import Plan, file_literals
from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.runtime.report import RunResult

Stamp = tuple[int, int] | None  # (mtime_ns, size), None when the file is missing


def read_params_file(path: Path) -> dict[str, Any]:
    """Param overrides from a YAML/JSON mapping; a user error when it is not one."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise NodegraphError(f"cannot read params file '{path}': {exc}") from exc
    if not isinstance(data, dict):
        raise NodegraphError(f"params file '{path}' must be a mapping of param name -> value")
    return data


def input_files(plan: Plan) -> list[Path]:
    """The files the plan's nodes read (literals of fingerprinted types such as `InputFile`)."""
    return [lit.path for lit in file_literals(plan) if lit.path.is_file()]


def stamps(files: list[Path]) -> dict[Path, Stamp]:
    """Modification time and size of each file (None for a missing one)."""
    out: dict[Path, Stamp] = {}
    for f in files:
        try:
            st = f.stat()
        except OSError:
            out[f] = None
        else:
            out[f] = (st.st_mtime_ns, st.st_size)
    return out


@dataclass
class WatchState:
    """What a watch session did: runs made, failures, the files watched now."""

    runs: int = 0
    failures: int = 0
    files: list[Path] = field(default_factory=list)


def watch(
    engine: Engine,
    graph: Path,
    *,
    options: RunOptions,
    overrides: dict[str, Any] | None = None,
    params_file: Path | None = None,
    on_result: Callable[[RunResult], None] = lambda _r: None,
    on_error: Callable[[NodegraphError], None] = lambda _e: None,
    poll_s: float = 0.5,
    max_polls: int | None = None,
    max_runs: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchState:
    """Run `graph`, then poll its files every `poll_s` seconds and run again after each change.

    User errors (a broken edit) go to `on_error` and the session keeps watching; `max_polls` and
    `max_runs` bound the session (tests; None = until interrupted).
    """
    state = WatchState()

    def run_once() -> None:
        given = dict(overrides or {})
        plan: Plan | None = None
        try:
            if params_file is not None:
                given = {**read_params_file(params_file), **given}
            plan = engine.load(graph, given or None)
            result = engine.run(plan, options=options)
        except NodegraphError as exc:
            state.failures += 1
            on_error(exc)
        else:
            on_result(result)
        finally:
            state.runs += 1
        own = [graph] + ([params_file] if params_file is not None else [])
        state.files = own + (input_files(plan) if plan is not None else
                             [f for f in state.files if f not in own])

    run_once()
    seen = stamps(state.files)
    polls = 0
    while (max_polls is None or polls < max_polls) and (max_runs is None or state.runs < max_runs):
        sleep(poll_s)
        polls += 1
        now = stamps(state.files)
        if now != seen:
            run_once()
            seen = stamps(state.files)
    return state
