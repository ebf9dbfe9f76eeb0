"""`nodegraph watch GRAPH`: keep models and the cache warm, re-run when the graph or its files change."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodegraph.cli.output import consoles, print_problems, problems_of, report_table, user_errors
from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.devices import parse_size
from nodegraph.runtime.report import RunResult
from nodegraph.runtime.threads import configure_threads


def budgets(vram: str | None, ram: str | None) -> tuple[int | None, int | None]:
    """`--vram-budget`/`--ram-budget` texts to bytes (None: the default)."""
    return (parse_size(vram, "--vram-budget") if vram else None,
            parse_size(ram, "--ram-budget") if ram else None)


def residency_line(result: RunResult) -> str:
    """One line on model residency for the run report: loads, offloads, drops, peak per device."""
    res = result.resources
    if not res:
        return ""
    from nodegraph.runtime.devices import format_size

    peaks = ", ".join(f"{loc} {format_size(size)}" for loc, size in sorted(res.get("peak_bytes", {}).items()))
    streamed = f", {res['streams']} streamed in groups" if res.get("streams") else ""
    return (f"models: {res.get('loads', 0)} loaded, {res.get('offloads', 0)} offloaded, "
            f"{res.get('drops', 0)} dropped{streamed}; peak resident: {peaks or 'none'}")


def watch(
    ctx: typer.Context,
    graph: Annotated[Path, typer.Argument(help="Graph file (.yaml/.json) to run and watch")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a param or node input")] = None,
    params: Annotated[Path | None, typer.Option(
        "--params", help="YAML/JSON file of param values, re-read when it changes")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("out"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16")] = "auto",
    optimize: Annotated[str | None, typer.Option(help="Speed options: none, basic, compile or max")] = None,
    vram_budget: Annotated[str | None, typer.Option("--vram-budget", help="e.g. 6GB (default: device "
                                                                          "total minus a margin)")] = None,
    ram_budget: Annotated[str | None, typer.Option("--ram-budget", help="e.g. 16GB (default: no limit)")]
    = None,
    poll: Annotated[float, typer.Option(help="Seconds between checks for changed files", min=0.05)] = 0.5,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow pickled checkpoints")] = False,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads per torch operation")]
    = None,
) -> None:
    """Run a graph and re-run it whenever it (or a file it reads) changes; only changed nodes execute.

    Models stay loaded and results cached between runs. Stop with Ctrl-C.
    """
    configure_threads(threads)  # before torch is imported (see nodegraph/runtime/threads.py)
    from nodegraph.cli.app import model_dirs, parse_sets, registry_from
    from nodegraph.runtime.engine import Engine
    from nodegraph.runtime.watch import watch as watch_loop

    stdout, err = consoles()
    with user_errors(err, "stopped watching"):
        vram, ram = budgets(vram_budget, ram_budget)
        engine = Engine(registry_from(ctx), vram_budget=vram, ram_budget=ram)
        options = RunOptions(out_dir=out, device=device, dtype=dtype, allow_pickle=allow_pickle,
                             model_dirs=model_dirs([]), show_progress=False, optimize=optimize)

        def on_result(result: RunResult) -> None:
            stdout.print(report_table(result))
            for line in [residency_line(result), *result.notes]:
                if line:
                    stdout.print(line, highlight=False, soft_wrap=True)
            for path in result.written:
                stdout.print(f"wrote {path}", highlight=False, soft_wrap=True)
            stdout.print(f"watching {graph} (Ctrl-C to stop)", highlight=False)

        def on_error(exc: NodegraphError) -> None:
            print_problems(err, problems_of(exc))
            stdout.print(f"watching {graph} for a fix (Ctrl-C to stop)", highlight=False)

        watch_loop(engine, graph, options=options, overrides=parse_sets(set_ or []) or None,
                   params_file=params, on_result=on_result, on_error=on_error, poll_s=poll)
