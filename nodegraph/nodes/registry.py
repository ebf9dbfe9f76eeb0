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

from nodegraph.nodes import hookspecs
from nodegraph.nodes.spec import NODE_MARK, NodeSpec, build_spec, check_declaration
from nodegraph.runtime.context import NodeContext


@dataclass(frozen=True)
class PackInfo:
    """One pack as loaded: its node types, or why it was left out (then it has none)."""

    name: str
    version: str
    module: str
    node_types: tuple[str, ...] = ()
    error: str | None = None
    rejected: tuple[str, ...] = ()  # node types a failed pack declared; none of them were registered


class PackRegistrar:
    """Handed to one pack's `nodegraph_register` hook; collects that pack's node specs."""

    def __init__(self, pack: str) -> None:
        self.pack = pack
        self.specs: list[NodeSpec] = []

    def add(self, func: Callable[..., Any]) -> None:
        """Register one `@node` function; raises TypeError (failing the whole pack) on a bad declaration."""
        if not hasattr(func, NODE_MARK):
            raise TypeError(f"{func!r} is not tagged with @node")
        spec = build_spec(func, NodeContext)
        check_declaration(spec)
        object.__setattr__(spec, "pack", self.pack)
        self.specs.append(spec)

    def add_module(self, module: ModuleType) -> None:
        """Register every `@node` function defined in `module` (not those it imports), by type name."""
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

    def failed_pack(self, type_name: str) -> PackInfo | None:
        """The failed pack that declared `type_name`, or whose name is its prefix (so an error can say
        why a node type is missing)."""
        failed = [p for p in self.packs if p.error is not None]
        for pack in failed:
            if type_name in pack.rejected:
                return pack
        prefix = type_name.partition(".")[0]
        return next((p for p in failed if p.name == prefix), None)


@dataclass(frozen=True)
class PackSource:
    """One pack to load: a name, a version and a way to import its plugin object."""

    name: str
    version: str
    module: str
    load: Callable[[], Any]


BUILTIN_DIST = "nodegraph"


def entry_point_sources() -> list[PackSource]:
    """The installed packs, found through the `nodegraph` entry-point group: nodegraph's own packs
    first, then the others, each by name. Earlier packs win a clash of node type names, so a
    third-party pack can never take a built-in node type away."""
    found = []
    for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else ""
        version = ep.dist.version if ep.dist is not None else "unknown"
        found.append((dist != BUILTIN_DIST, PackSource(ep.name, version, ep.value, ep.load)))
    return [source for _, source in sorted(found, key=lambda item: (item[0], item[1].name))]


def _call_pack(pm: pluggy.PluginManager, source: PackSource, registrar: PackRegistrar) -> None:
    """Import one pack and run its `nodegraph_register` hook alone; raises whatever the pack raises."""
    plugin = source.load()
    pm.register(plugin, name=source.name)
    offered = {"registry": registrar}
    for impl in pm.hook.nodegraph_register.get_hookimpls():
        if impl.plugin_name == source.name:  # call this pack only, with the args it accepts
            impl.function(**{name: offered[name] for name in impl.argnames})


def _conflict(pack: str, offered: list[NodeSpec], taken: Mapping[str, NodeSpec]) -> str | None:
    """Why a pack's node types cannot join those already registered, or None if they can."""
    names = [spec.type_name for spec in offered]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f"declares node type '{twice[0]}' twice"
    clashes = [n for n in names if n in taken]
    if not clashes:
        return None
    more = f" (and {len(clashes) - 1} more of its node types)" if len(clashes) > 1 else ""
    return (f"node type '{clashes[0]}' is already declared by pack '{taken[clashes[0]].pack}'{more}; "
            f"the pack loaded first keeps the name, so pack '{pack}' is left out")


def build_registry(sources: Iterable[PackSource] | None = None) -> Registry:
    """Load every pack with a fresh plugin manager; a broken pack is reported, never fatal.

    A pack whose import or hook raises, that declares a node breaking the rules (`check_declaration`),
    or that claims a node type an earlier pack (in entry-point order) already declared, is left out
    whole: none of its nodes are registered, and `Registry.packs` says why. The other packs load.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    specs: dict[str, NodeSpec] = {}
    packs: list[PackInfo] = []
    for source in entry_point_sources() if sources is None else sources:
        registrar = PackRegistrar(source.name)
        offered = registrar.specs
        try:
            _call_pack(pm, source, registrar)
            error = _conflict(source.name, offered, specs)
        except Exception as exc:  # noqa: BLE001 - a broken pack must not break the others
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            if pm.has_plugin(source.name):
                pm.unregister(name=source.name)
            packs.append(PackInfo(source.name, source.version, source.module, error=error,
                                  rejected=tuple(spec.type_name for spec in offered)))
            continue
        specs.update((spec.type_name, spec) for spec in offered)
        packs.append(PackInfo(source.name, source.version, source.module,
                              tuple(spec.type_name for spec in offered)))
    return Registry(dict(sorted(specs.items())), tuple(packs))
