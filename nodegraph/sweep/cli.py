"""`nodegraph run GRAPH --sweep ...`: the sweep side of the `run` command (the command itself lives in
nodegraph/cli/app.py and hands over here when `--sweep` is given).

One progress bar counts finished variants, whichever executor runs them; the summary names the
manifest and the contact sheet. Ctrl-C keeps the finished variants and says how to resume (exit 130).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nodegraph.cli.output import EXIT_INTERRUPTED, user_errors
from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.sweep.ranking import RankBy, Ranking, check_rank_by
from nodegraph.sweep.runner import (
    LocalExecutor,
    SweepInterrupted,
    SweepSpec,
    SweepSummary,
    prepare_sweep,
    run_sweep,
)
from nodegraph.sweep.spec import parse_axes

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class SweepArgs:
    """The sweep options of `nodegraph run`."""

    sweeps: list[str]
    zipped: bool = False
    executor: str = "local"
    address: str | None = None
    resume: bool = False
    workers: int | None = None
    rank_by: str | None = None
    keep: int = 4

    @property
    def rank(self) -> RankBy | None:
        return RankBy(self.rank_by, self.keep) if self.rank_by is not None else None


def check_args(args: SweepArgs) -> None:
    """Options that only make sense with --sweep, or with the Ray executor, are user errors otherwise."""
    if args.executor not in EXECUTORS:
        raise NodegraphError(f"unknown executor '{args.executor}' (use local or ray)")
    if not args.sweeps and (args.executor != "local" or args.resume or args.workers or args.zipped
                            or args.address or args.rank_by):
        raise NodegraphError("--executor, --address, --resume, --workers, --zip and --rank-by apply to "
                             "sweeps: add --sweep target=values")
    if args.executor == "local" and (args.address or args.workers):
        raise NodegraphError("--address and --workers apply to --executor ray")


def sweep_command(stdout: Console, err: Console, engine: Engine, graph: Path, fixed: dict[str, str],
                  args: SweepArgs, options: RunOptions, packs: tuple[str, ...] | None,
                  quiet: bool) -> None:
    """Validate every variant, run the sweep on the chosen executor, and print where the results are."""
    with user_errors(err):
        axes = parse_axes(args.sweeps, Path.cwd())
        spec = prepare_sweep(engine, graph, axes, args.zipped, fixed, options)
        if args.rank is not None:
            check_rank_by(args.rank, list(engine.load(graph, fixed or None).nodes), graph)
        try:
            summary = _run(err, engine, spec, args, options, packs, quiet)
        except SweepInterrupted as exc:
            err.print(f"[yellow]{exc}[/yellow]", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    stdout.print(f"sweep: {summary.total} variants, {summary.ran} run, {summary.skipped} already done "
                 f"({summary.wall_s:.1f} s)", highlight=False)
    stdout.print(f"wrote {summary.manifest}", highlight=False, soft_wrap=True)
    if summary.contact_sheet is not None:
        stdout.print(f"wrote {summary.contact_sheet}", highlight=False, soft_wrap=True)
    if summary.ranking is not None:
        _print_ranking(stdout, summary.ranking)


def _print_ranking(stdout: Console, ranking: Ranking) -> None:
    for row in ranking.rows[:3]:
        values = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        stdout.print(f"#{row['rank']} {values}: score {row['score']:.4f} ({row['image']})", highlight=False)
    if ranking.unscored:
        stdout.print(f"[yellow]{ranking.unscored} variant(s) reported no score[/yellow]", highlight=False)
    for path in (ranking.file, ranking.sheet):
        if path is not None:
            stdout.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _run(err: Console, engine: Engine, spec: SweepSpec, args: SweepArgs, options: RunOptions,
         packs: tuple[str, ...] | None, quiet: bool) -> SweepSummary:
    show = not quiet and err.is_terminal
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True, disable=not show)
    with bar:
        task = bar.add_task(f"sweep ({args.executor})", total=len(spec.variants))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if args.executor == "local":
            return run_sweep(spec, LocalExecutor(engine, options), options.out_dir, args.resume, progress,
                             args.rank)
        from nodegraph.sweep.ray_executor import RayExecutor, ray_session

        with ray_session(args.address):
            executor = RayExecutor(options, packs, args.workers, engine.cache.memory.max_bytes / 2**20)
            return run_sweep(spec, executor, options.out_dir, args.resume, progress, args.rank)
