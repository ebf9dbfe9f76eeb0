"""Read-only CLI pages: node listings and schemas, plugin packs, graph renderings, the graph JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nodegraph.errors import NodegraphError
from nodegraph.nodes.registry import Registry
from nodegraph.nodes.spec import MISSING, InputSpec, NodeSpec, type_name_of

graph_app = typer.Typer(help="Inspect graphs.", no_args_is_help=True)

_RANGE_KEYS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
               ("minLength", "len >="), ("maxLength", "len <="))


def input_range(inp: InputSpec) -> str:
    """The accepted values of a literal input, read from its pydantic schema (ranges, choices)."""
    if inp.literal_adapter is None:
        return ""
    try:
        schema: dict[str, Any] = inp.literal_adapter.json_schema()
    except Exception:  # noqa: BLE001 - a schema pydantic cannot render just shows no range
        return ""
    for option in schema.get("anyOf", []):  # Optional[...] wraps the real schema
        if option.get("type") != "null":
            schema = {**option, **{k: v for k, v in schema.items() if k != "anyOf"}}
    parts = [f"{op} {schema[key]}" for key, op in _RANGE_KEYS if key in schema]
    if "enum" in schema:
        parts.append(" | ".join(str(v) for v in schema["enum"]))
    return ", ".join(parts)


def _default(inp: InputSpec) -> str:
    return "(required)" if inp.default is MISSING else repr(inp.default)


def _spec_or_error(registry: Registry, type_name: str) -> NodeSpec:
    spec = registry.get(type_name)
    if spec is None:
        close = registry.closest(type_name)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        failed = registry.failed_pack(type_name)
        why = f"; pack '{failed.name}' failed to load, see `nodegraph plugins`" if failed else ""
        raise NodegraphError(f"unknown node type '{type_name}'{hint}; `nodegraph nodes` lists them all{why}")
    return spec


def show_nodes(out: Console, registry: Registry, type_name: str | None) -> None:
    if type_name is None:
        table = Table(title=f"{len(registry.specs)} node types", title_justify="left")
        for column in ("type", "version", "pack", "description"):
            table.add_column(column)
        for name in registry:
            spec = registry.specs[name]
            table.add_row(name, spec.version, spec.pack, escape(spec.description))
        out.print(table)
        return
    spec = _spec_or_error(registry, type_name)
    flags = [f for f, on in (("non-deterministic (never cached)", not spec.deterministic),
                             ("side effects (always runs)", spec.side_effects)) if on]
    out.print(f"[bold]{spec.type_name}[/bold] {spec.version}  (pack '{spec.pack}')"
              + (f"  [yellow]{'; '.join(flags)}[/yellow]" if flags else ""), highlight=False)
    if spec.doc:
        out.print(escape(spec.doc), highlight=False)
    inputs = Table(title="inputs", title_justify="left")
    for column in ("name", "type", "default", "range", "description"):
        inputs.add_column(column)
    for inp in spec.inputs.values():
        inputs.add_row(inp.name, escape(type_name_of(inp.annotation)), escape(_default(inp)),
                       escape(input_range(inp)), escape(inp.description))
    out.print(inputs)
    outputs = Table(title="outputs", title_justify="left")
    outputs.add_column("name")
    outputs.add_column("type")
    for output in spec.outputs.values():
        outputs.add_row(output.name, escape(type_name_of(output.type)))
    out.print(outputs)


def show_plugins(out: Console, registry: Registry) -> None:
    table = Table(title="node packs", title_justify="left")
    for column in ("pack", "version", "module", "nodes", "status"):
        table.add_column(column)
    for pack in registry.packs:
        status = f"[red]failed: {escape(pack.error)}[/red]" if pack.error else "[green]ok[/green]"
        table.add_row(pack.name, pack.version, pack.module, str(len(pack.node_types)), status)
    out.print(table)


def show_schema(out: Console, registry: Registry) -> None:
    from nodegraph.document.schema import graph_json_schema

    out.print_json(json.dumps(graph_json_schema(registry)))


@graph_app.command("show")
def show(
    ctx: typer.Context,
    graph: Annotated[Path, typer.Argument(help="Graph file to render")],
    format: Annotated[str, typer.Option("--format", "-f", help="text, mermaid or dot")] = "text",
) -> None:
    """Render a graph as text, a Mermaid flowchart or Graphviz dot."""
    from nodegraph.cli.app import registry_from
    from nodegraph.cli.output import consoles, user_errors
    from nodegraph.runtime.engine import Engine

    stdout, err = consoles()
    with user_errors(err):
        from nodegraph.document import render

        renderers = {"text": render.render_text, "mermaid": render.render_mermaid, "dot": render.render_dot}
        if format not in renderers:
            raise NodegraphError(f"unknown format '{format}' (use text, mermaid or dot)")
        plan = Engine(registry_from(ctx)).load(graph)
        print(renderers[format](plan))
