"""Shared by the CLI safety tests: the core pack plus a few nodes that plant links mid-run, a runner."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

from pydantic import Field
from typer.testing import CliRunner, Result

from nodegraph.api import Image, NodeContext, hookimpl, node
from nodegraph.cli.app import app
from nodegraph.nodes.registry import PackSource, Registry, build_registry, entry_point_sources

IMAGE = Path(__file__).resolve().parents[3] / "graphs" / "inputs" / "scene_64.png"


def _module(calls: list[str]) -> ModuleType:
    @node("safety.plant_link", version="1.0.0")
    def plant_link(
        ctx: NodeContext,
        image: Annotated[Image, Field(description="Passed through unchanged")],
        name: Annotated[str, Field(description="Link name inside the staging folder")],
        target: Annotated[str, Field(description="Where the link points")],
    ) -> Image:
        """Plant a symbolic link in this run's staging folder, as a hostile process might."""
        calls.append("plant_link")
        link = ctx.run.staging_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return image

    @node("safety.plant_out_link", version="1.0.0")
    def plant_out_link(
        ctx: NodeContext,
        after: Annotated[list[str], Field(description="Runs after the node giving this")],
        name: Annotated[str, Field(description="Link name inside the output folder")],
        target: Annotated[str, Field(description="Where the link points")],
    ) -> str:
        """Plant a symbolic link in the output folder after outputs were staged, before they move."""
        calls.append("plant_out_link")
        link = ctx.options.out_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return str(link)

    @node("safety.count", version="1.0.0")
    def count(value: Annotated[int, Field(description="Any number")] = 0) -> int:
        """Record that the graph ran."""
        calls.append("count")
        return value

    module = ModuleType("nodegraph_safety_nodes")
    for func in (plant_link, plant_out_link, count):
        func.__module__ = module.__name__
        setattr(module, func.__name__, func)
    return module


class _Pack:
    def __init__(self, module: ModuleType) -> None:
        self.module = module

    @hookimpl
    def nodegraph_register(self, registry: Any) -> None:
        registry.add_module(self.module)


def safety_registry(calls: list[str]) -> Registry:
    """The installed core pack plus the link-planting nodes; `calls` records which ran."""
    core = [s for s in entry_point_sources() if s.name == "core"]
    module = _module(calls)
    registry = build_registry([*core, PackSource("safety", "1.0.0", module.__name__, lambda: _Pack(module))])
    assert {"core.save_image", "safety.plant_link"} <= set(registry.specs), registry.packs
    return registry


def write_graph(folder: Path, nodes: dict[str, Any], name: str = "graph.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"version": 1, "nodes": nodes}))
    return path


def save_graph(folder: Path, out_path: str) -> Path:
    """load_image -> save_image at `out_path`."""
    return write_graph(folder, {
        "img": {"type": "core.load_image", "path": str(IMAGE)},
        "save": {"type": "core.save_image", "image": "@img", "path": out_path},
    })


def run_cli(registry: Registry, *args: str) -> Result:
    """`nodegraph run ...` in-process against `registry`; never a traceback (exit 1) allowed."""
    result = CliRunner().invoke(app, ["run", *args, "-q"], obj={"registry": registry})
    if result.exit_code not in (0, 2):
        raise AssertionError(f"exit {result.exit_code}: {result.output}") from result.exception
    return result


def tree(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (links not followed): relative name -> 'dir', 'file' or 'link'."""
    if not folder.exists() and not folder.is_symlink():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        found[path.relative_to(folder).as_posix()] = kind
    return found
