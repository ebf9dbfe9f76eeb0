"""The registry of node types, built once from plugin hook results and read-only afterwards."""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from nodegraph.errors import PluginError
from nodegraph.nodes import hookspecs
from nodegraph.nodes.spec import NODE_MARK, NodeSpec, build_spec
from nodegraph.runtime.context import NodeContext


@dataclass(frozen=True)
class PackInfo:
    name: str
    version: str
    module: str
    node_types: tuple[str, ...] = ()
    error: str | None = None


class PackRegistrar:
    """Handed to one pack's `nodegraph_register` hook; collects that pack's node specs."""

    def __init__(self, pack: str) -> None:
        self.pack = pack
        self.specs: list[NodeSpec] = []

    def add(self, func: Callable[..., Any]) -> None:
        if not hasattr(func, NODE_MARK):
            raise TypeError(f"{func!r} is not tagged with @node")
        spec = build_spec(func, NodeContext)
        object.__setattr__(spec, "pack", self.pack)
        self.specs.append(spec)

    def add_module(self, module: ModuleType) -> None:
        tagged = [obj for _, obj in inspect.getmembers(module) if callable(obj) and hasattr(obj, NODE_MARK)]
        for func in sorted(tagged, key=lambda f: getattr(f, NODE_MARK).type_name):
            if getattr(func, "__module__", None) == module.__name__:
                self.add(func)


@dataclass(frozen=True)
class Registry:
    """Node types by name, and what happened to every pack."""

    specs: Mapping[str, NodeSpec]
    packs: tuple[PackInfo, ...] = field(default=())

    def get(self, type_name: str) -> NodeSpec | None:
        return self.specs.get(type_name)

    def closest(self, type_name: str, n: int = 3) -> list[str]:
        return difflib.get_close_matches(type_name, list(self.specs), n=n, cutoff=0.5)

    def __contains__(self, type_name: str) -> bool:
        return type_name in self.specs

    def __iter__(self) -> Any:
        return iter(sorted(self.specs))


@dataclass(frozen=True)
class PackSource:
    """One pack to load: a name, a version and a way to import its plugin object."""

    name: str
    version: str
    module: str
    load: Callable[[], Any]


def entry_point_sources() -> list[PackSource]:
    """The installed packs, found through the `nodegraph` entry-point group, sorted by name."""
    sources = []
    for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        version = ep.dist.version if ep.dist is not None else "unknown"
        sources.append(PackSource(ep.name, version, ep.value, ep.load))
    return sorted(sources, key=lambda s: s.name)


def build_registry(sources: Iterable[PackSource] | None = None) -> Registry:
    """Load every pack with a fresh plugin manager; a broken pack is reported, never fatal.

    Two packs claiming one node type is a `PluginError` naming both.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    specs: dict[str, NodeSpec] = {}
    packs: list[PackInfo] = []
    for source in entry_point_sources() if sources is None else sources:
        try:
            plugin = source.load()
            pm.register(plugin, name=source.name)
            registrar = PackRegistrar(source.name)
            offered = {"registry": registrar}
            for impl in pm.hook.nodegraph_register.get_hookimpls():
                if impl.plugin_name == source.name:  # call this pack only, with the args it accepts
                    impl.function(**{name: offered[name] for name in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - a broken pack must not break the others
            if pm.has_plugin(source.name):
                pm.unregister(name=source.name)
            packs.append(PackInfo(source.name, source.version, source.module,
                                  error=f"{type(exc).__name__}: {exc}"))
            continue
        for spec in registrar.specs:
            if spec.type_name in specs:
                other = specs[spec.type_name].pack
                raise PluginError(
                    f"node type '{spec.type_name}' is declared by two packs: '{other}' and '{source.name}'"
                )
            specs[spec.type_name] = spec
        packs.append(PackInfo(source.name, source.version, source.module,
                              tuple(s.type_name for s in registrar.specs)))
    return Registry(dict(sorted(specs.items())), tuple(packs))
