"""`nodegraph` command line: run and validate graphs; list nodes and plugins; show graphs; the schema.

Every user-caused error (`NodegraphError`) is printed without a traceback, one problem per line, and
exits with code 2; Ctrl-C exits with 130 after removing staged outputs.
Tests may pass `obj={"registry": ...}` to `CliRunner.invoke` to run against a chosen registry.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nodegraph.cli import import_cmd, importers, info, serve_cmd, watch_cmd
from nodegraph.cli.output import consoles, print_problems, report_table, user_errors
from nodegraph.document.plan import Plan
from nodegraph.errors import NodegraphError, Problem
from nodegraph.nodes.registry import Registry, build_registry, entry_point_sources
from nodegraph.runtime.advice import run_compile_advice
from nodegraph.runtime.cachedir import cli_cache_dir
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.devices import DTYPES
from nodegraph.runtime.engine import Engine
from nodegraph.runtime.report import write_json_atomic
from nodegraph.runtime.staging import check_output_folder
from nodegraph.runtime.threads import configure_threads

MODELS_ENV = "NODEGRAPH_MODELS"
PACKS_ENV = "NODEGRAPH_PACKS"  # comma-separated pack names to load (default: every installed pack)
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

app = typer.Typer(
    name="nodegraph",
    help="Image generation written as typed node graphs: run, validate and inspect graphs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(info.graph_app, name="graph")
app.command("watch")(watch_cmd.watch)
app.command("import")(import_cmd.import_graph)
app.command("export")(import_cmd.export_graph)
app.command("serve")(serve_cmd.serve)


def _print_version(value: bool) -> None:
    if value:
        from nodegraph.cli.version import version_lines

        typer.echo("\n".join(version_lines()))
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the versions of nodegraph, its packs, torch and diffusers, and exit")] = False,
) -> None:
    """Image generation written as typed node graphs: run, validate and inspect graphs."""


def registry_from(ctx: typer.Context) -> Registry:
    """The registry for this command: injected by tests through `obj`, else the installed packs.

    `$NODEGRAPH_PACKS=core,example` loads only the named packs (faster start, or to rule a pack out).
    """
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("registry") is not None:
        return obj["registry"]  # type: ignore[no-any-return]
    wanted = {name.strip() for name in os.environ.get(PACKS_ENV, "").split(",") if name.strip()}
    if not wanted:
        return build_registry()
    return build_registry([s for s in entry_point_sources() if s.name in wanted])


def parse_sets(items: list[str]) -> dict[str, str]:
    """`--set k=v` items to a dict of texts (the document layer reads them as YAML scalars)."""
    overrides: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise NodegraphError(f"--set '{item}' must look like name=value or node.input=value")
        overrides[key.strip()] = value
    return overrides


def paths_from_cwd(plan: Plan, overrides: dict[str, str]) -> dict[str, str]:
    """`--set` values of `path` params that name a file from the shell's folder, made absolute.

    A graph reads relative paths from its own folder; a user typing `--set pose=my.json` means the
    file beside them. The graph's folder still wins when the file exists there, so the paths its own
    description suggests keep working.
    """
    base = plan.file.parent if plan.file is not None else Path.cwd()
    declared = plan.resolved.get("params", {}) if isinstance(plan.resolved, dict) else {}
    fixed = dict(overrides)
    for key, value in overrides.items():
        decl = declared.get(key)
        if not isinstance(decl, dict) or decl.get("type") != "path":
            continue
        given = Path(value).expanduser()
        if not given.is_absolute() and not (base / given).exists() and given.exists():
            fixed[key] = str(given.resolve())
    return fixed


def model_dirs(cli_dirs: list[Path]) -> tuple[Path, ...]:
    """`--models` folders first, then those in $NODEGRAPH_MODELS (os.pathsep-separated)."""
    env = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]
    return tuple(Path(p).expanduser() for p in cli_dirs) + tuple(env)


@app.command()
def run(
    ctx: typer.Context,
    graph: Annotated[Path, typer.Argument(help="Graph file (.yaml/.json), or a PNG written by nodegraph")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a param (name=value) or a node input (node.input=value); repeatable")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("out"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16")] = "auto",
    cache_mb: Annotated[float, typer.Option("--cache-mb", min=0,
                                            help="Memory cache budget in MB")] = 2048,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Disk cache folder, shared across runs and processes (default: "
                            "$NODEGRAPH_CACHE_DIR, else the user cache folder, e.g. ~/.cache/nodegraph)")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Keep no disk cache for this run")] = False,
    cache_disk_mb: Annotated[float | None, typer.Option(
        "--cache-disk-mb", min=0, help="Disk cache bound in MB; least recently used entries go past it "
                                       "(default: $NODEGRAPH_CACHE_MAX_MB, else 2048)")] = None,
    report: Annotated[bool, typer.Option("--report", help="Also write report.json into the output folder")
                      ] = False,
    models: Annotated[list[Path] | None, typer.Option(
        "--models", help=f"Folder to look for model files in; repeatable (also ${MODELS_ENV})")] = None,
    allow_pickle: Annotated[bool, typer.Option(
        "--allow-pickle", help="Allow pickled checkpoints (.ckpt/.bin), loaded with weights_only=True")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="No progress bars and no report table")] = False,
    sweep: Annotated[list[str] | None, typer.Option(
        "--sweep", help="Sweep a param or node.input: seed=1..16, w=0,0.5,1 or prompt=@file.txt; repeatable "
                        "(see docs/sweeps.md)")] = None,
    zipped: Annotated[bool, typer.Option("--zip/--grid", help="Pair sweep values up (zip) or run every "
                                                              "combination (grid, the default)")] = False,
    executor: Annotated[str, typer.Option("--executor", help="Where sweep variants run: local or ray")
                        ] = "local",
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to join (HEAD:6379); default: a private Ray on 127.0.0.1")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip sweep variants already finished in --out")
                      ] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Ray workers (default: one per GPU, else one per CPU slot)")] = None,
    rank_by: Annotated[str | None, typer.Option(
        "--rank-by", help="Rank sweep variants by the score this node reports (e.g. best_of_n's "
                          "best_scores): ranking.json and best_contact_sheet.png")] = None,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Variants on the best contact sheet (--rank-by)")
                    ] = 4,
    optimize: Annotated[str | None, typer.Option(
        "--optimize", help="Speed options: none, basic (channels-last, fused QKV; the CPU choice), compile, "
                           "max (torch.compile: for GPUs, minutes of one-time cost on the CPU) (default: the "
                           "graph's runtime setting, else none)")] = None,
    vram_budget: Annotated[str | None, typer.Option(
        "--vram-budget", help="Model memory on the GPU, e.g. 2GB (default: device total minus a margin)")]
    = None,
    ram_budget: Annotated[str | None, typer.Option(
        "--ram-budget", help="Model memory in CPU RAM, e.g. 16GB; past it models are dropped")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads per torch operation (default: torch's, or $OMP_NUM_THREADS)")]
    = None,
) -> None:
    """Run a graph; only what changed since the cached results is recomputed."""
    configure_threads(threads)  # before anything imports torch: OpenMP reads its settings once
    stdout, err = consoles()
    from nodegraph.sweep.cli import SweepArgs, check_args, sweep_command

    sweep_args = SweepArgs(sweep or [], zipped, executor, address, resume, workers, rank_by, keep)
    with user_errors(err):
        check_output_folder(out)  # a bad --out fails now, not after the whole graph has computed
        check_args(sweep_args)
        if not _DEVICE_RE.match(device):
            raise NodegraphError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)")
        if dtype != "auto" and dtype not in DTYPES:
            raise NodegraphError(f"unknown dtype '{dtype}' (use auto, float32, float16 or bfloat16)")
        overrides = parse_sets(set_ or [])
        vram, ram = watch_cmd.budgets(vram_budget, ram_budget)
        disk_dir, cache_note = cli_cache_dir(no_cache, cache_dir)
        engine = Engine(registry_from(ctx), cache_mb=cache_mb, cache_dir=disk_dir, vram_budget=vram,
                        ram_budget=ram, cache_disk_mb=cache_disk_mb)
        if cache_note is not None:
            engine.cache.note(cache_note)
        dirs = model_dirs(models or [])
        source = imported_source(graph, err, dirs)
        if source is not None and sweep_args.sweeps:
            raise NodegraphError(f"to sweep a workflow of another tool, import it first "
                                 f"(`nodegraph import comfyui {graph} -o graph.yaml`), then sweep graph.yaml")
        plan = engine.load(source or graph, overrides or None, file=graph if source else None)
        from_cwd = paths_from_cwd(plan, overrides)
        if from_cwd != overrides:
            plan = engine.load(source or graph, from_cwd, file=graph if source else None)
        if source is not None:
            importers.check(graph, plan.resolved, dirs)  # e.g. every model file it names exists
        show = not quiet and err.is_terminal
        options = RunOptions(out_dir=out, device=device, dtype=dtype, allow_pickle=allow_pickle,
                             model_dirs=dirs, show_progress=show, optimize=optimize)
        advice = run_compile_advice(plan, options)
        if advice is not None:  # now, not after minutes of compiling
            err.print(f"[yellow]warning: {advice}[/yellow]", highlight=False, soft_wrap=True)
        if sweep_args.sweeps:
            packs = tuple(n.strip() for n in os.environ.get(PACKS_ENV, "").split(",") if n.strip()) or None
            sweep_command(stdout, err, engine, graph, from_cwd, sweep_args, options, packs, quiet)
            return
        if show:
            from nodegraph.runtime.progress import RichProgress

            with RichProgress(err) as bars:
                result = engine.run(plan, options=options, progress=bars)
        else:
            result = engine.run(plan, options=options)
        if report:
            try:
                write_json_atomic(out / "report.json", result.report_json())
            except OSError as exc:  # a full disk, say: the outputs are in place, only the report is not
                raise NodegraphError(f"cannot write '{out / 'report.json'}': {exc.strerror or exc} "
                                     f"(the run's {len(result.written)} output files were written)") from exc
    if not quiet:
        stdout.print(report_table(result))
        sinks = [n for n in plan.nodes if n not in plan.dag or plan.dag.out_degree(n) == 0]
        for node_id in sinks:
            for name, value in result.outputs.get(node_id, {}).items():
                if isinstance(value, (str, int, float, bool)):
                    stdout.print(f"{node_id}.{name} = {value!r}", highlight=False, soft_wrap=True)
        if result.resources.get("loads") or result.resources.get("offloads"):
            stdout.print(watch_cmd.residency_line(result), highlight=False, soft_wrap=True)
    for note in result.notes:
        err.print(f"[yellow]note: {note}[/yellow]", highlight=False, soft_wrap=True)
    for path in result.written:
        stdout.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if report:
        stdout.print(f"wrote {out / 'report.json'}", highlight=False, soft_wrap=True)


def imported_source(graph: Path, err: Any, dirs: tuple[Path, ...] = ()) -> dict[str, Any] | None:
    """The converted graph when `graph` is another tool's workflow (an importer recognises it), saying so."""
    found = importers.detect(graph)
    if found is None:
        return None
    name, importer = found
    err.print(f"note: {graph} is a {importer.label}: running it through `nodegraph import {name}`",
              highlight=False, soft_wrap=True)
    return importers.convert(importer, graph, dirs)


@app.command()
def validate(
    ctx: typer.Context,
    graphs: Annotated[list[Path], typer.Argument(help="Graph files to check")],
    models: Annotated[list[Path] | None, typer.Option(
        "--models", help="Model folder (repeatable; also $NODEGRAPH_MODELS): with one, the model files "
                         "an imported workflow names must be found there")] = None,
) -> None:
    """Check graphs without running them; prints OK per file or every problem (exit 2 if any)."""
    stdout, err = consoles()
    engine = Engine(registry_from(ctx))
    failed = False
    dirs = model_dirs(models or [])
    for graph in graphs:
        try:
            source = imported_source(graph, err, dirs)
            plan = engine.load(source or graph, file=graph if source else None)
            if source is not None and dirs:  # where the models are is known: they must be there
                importers.check(graph, plan.resolved, dirs)
        except NodegraphError as exc:
            from nodegraph.cli.output import problems_of

            failed = True
            problems: list[Problem | str] = problems_of(exc)
            print_problems(err, problems)
            continue
        stdout.print(f"OK {graph}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


@app.command()
def nodes(
    ctx: typer.Context,
    type_name: Annotated[str | None,
                         typer.Argument(metavar="TYPE", help="Show one node type in full")] = None,
) -> None:
    """List node types, or show one type's inputs, outputs, version and documentation."""
    stdout, err = consoles()
    with user_errors(err):
        info.show_nodes(stdout, registry_from(ctx), type_name)


@app.command()
def plugins(ctx: typer.Context) -> None:
    """List the installed node packs with their versions, node counts and load errors."""
    stdout, _ = consoles()
    info.show_plugins(stdout, registry_from(ctx))


@app.command()
def schema(ctx: typer.Context) -> None:
    """Print the JSON Schema of graph files for the installed node types (for editors)."""
    stdout, err = consoles()
    with user_errors(err):
        info.show_schema(stdout, registry_from(ctx))


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return app(args=argv if argv is not None else sys.argv[1:], prog_name="nodegraph")
