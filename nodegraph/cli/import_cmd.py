"""`nodegraph import FORMAT FILE [-o graph.yaml]`: convert another tool's workflow file to a graph.

The format names the importer (`comfyui`, see `nodegraph.cli.importers`); the graph is written as
readable YAML (to stdout without `-o`), then checked against the installed node types so that an
imported graph is known to load before anyone runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nodegraph.cli import importers
from nodegraph.cli.output import consoles, user_errors
from nodegraph.errors import NodegraphError


def import_graph(
    ctx: typer.Context,
    format_name: Annotated[str, typer.Argument(metavar="FORMAT", help="The file's tool: comfyui")],
    file: Annotated[Path, typer.Argument(help="Workflow file (ComfyUI: API or UI JSON, or a PNG it saved)")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Graph file to write (.yaml); "
                                                                         "default: print it")] = None,
) -> None:
    """Convert a workflow file of another tool (ComfyUI) into a nodegraph graph file."""
    from nodegraph.cli.app import registry_from
    from nodegraph.runtime.engine import Engine

    stdout, err = consoles()
    with user_errors(err):
        importer = importers.named(format_name)
        if not file.is_file():
            raise NodegraphError(f"'{file}' does not exist")
        graph = importer.convert(file)
        Engine(registry_from(ctx)).load(graph, file=file)  # the converted graph must load as it is
        if not _emit(to_yaml(graph), output, stdout):
            return
    err.print(f"imported {importer.label} {file} -> {output} ({len(graph['nodes'])} nodes, "
              f"{len(graph['params'])} params)", highlight=False, soft_wrap=True)


def export_graph(
    ctx: typer.Context,
    format_name: Annotated[str, typer.Argument(metavar="FORMAT", help="The tool to export for: comfyui")],
    graph: Annotated[Path, typer.Argument(help="Graph file (.yaml/.json)")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a param (name=value); repeatable")]
    = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="File to write (.json); default: print it")] = None,
) -> None:
    """Write a graph in another tool's format (ComfyUI's API JSON), or list the nodes it cannot take."""
    import json

    from nodegraph.cli.app import parse_sets, registry_from
    from nodegraph.runtime.engine import Engine

    stdout, err = consoles()
    with user_errors(err):
        importer = importers.named(format_name)
        exporter = getattr(importer, "export", None)
        if exporter is None:
            raise NodegraphError(f"the '{format_name}' importer cannot export")
        plan = Engine(registry_from(ctx)).load(graph, parse_sets(set_ or []) or None)
        text = json.dumps(exporter(plan.resolved), indent=2, ensure_ascii=False) + "\n"
        if not _emit(text, output, stdout):
            return
    err.print(f"exported {graph} -> {output}", highlight=False, soft_wrap=True)


def _emit(text: str, output: Path | None, stdout: Any) -> bool:
    """Print `text`, or write it to `output`; True when a file was written (the caller then says where)."""
    if output is None:
        stdout.out(text, end="", highlight=False)
        return False
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NodegraphError(f"cannot write '{output}': {exc.strerror or exc}") from exc
    return True


def to_yaml(graph: dict[str, object]) -> str:
    """The graph as readable YAML: one line per param and per node."""
    import json

    def flow(mapping: object) -> str:
        assert isinstance(mapping, dict)
        return "{" + ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in mapping.items()) + "}"

    lines = [f"version: {graph['version']}"]
    if graph.get("description"):
        lines.append(f"description: {json.dumps(graph['description'], ensure_ascii=False)}")
    for section in ("params", "nodes"):
        entries = graph.get(section) or {}
        assert isinstance(entries, dict)
        lines.append(f"{section}:" + ("" if entries else " {}"))
        width = max((len(name) for name in entries), default=0) + 1
        lines += [f"  {name + ':':<{width}} {flow(body)}" for name, body in entries.items()]
    if "metadata" in graph:
        lines.append(f"metadata: {json.dumps(graph['metadata'], ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
