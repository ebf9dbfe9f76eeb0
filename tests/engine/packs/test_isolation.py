"""One bad pack never takes the others down: it is left out whole and `nodegraph plugins` says why."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import pytest
from pydantic import Field
from typer.testing import CliRunner

from nodegraph.api import node
from nodegraph.cli.app import app
from nodegraph.nodes.registry import PackSource, Registry, build_registry, entry_point_sources
from nodegraph.testing import CallCounter, ToyPack, toy_module


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # rich reads it; tables then keep each row on one line


def _module(name: str, *funcs: object) -> ModuleType:
    module = ModuleType(name)
    for func in funcs:
        func.__module__ = name  # type: ignore[attr-defined]
        setattr(module, func.__name__, func)  # type: ignore[attr-defined]
    return module


def _intruder() -> ModuleType:
    """A pack with one node of its own and one that redeclares the toy pack's `toy.add`."""

    @node("beta.only", version="1.0.0")
    def only(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
        """A node nobody else declares."""
        return x

    @node("toy.add", version="2.0.0")
    def add(a: Annotated[float, Field(description="Term")] = 0.0) -> float:
        """Claims a name the toy pack already has."""
        return a

    return _module("beta_nodes", only, add)


def _registry() -> Registry:
    toy = toy_module(CallCounter())
    return build_registry([PackSource("alpha", "1.0.0", "alpha_mod", lambda: ToyPack(toy)),
                           PackSource("beta", "0.2.0", "beta_mod", lambda: ToyPack(_intruder())),
                           PackSource("gamma", "1.0.0", "gamma_mod", lambda: ToyPack(_gamma()))])


def _gamma() -> ModuleType:
    @node("gamma.ok", version="1.0.0")
    def ok(x: Annotated[float, Field(description="Value")] = 1.0) -> float:
        """A good pack loaded after the bad one."""
        return x

    return _module("gamma_nodes", ok)


def test_a_clashing_pack_is_left_out_whole_and_the_first_keeps_the_name() -> None:
    registry = _registry()
    packs = {p.name: p for p in registry.packs}
    assert [p.name for p in registry.packs] == ["alpha", "beta", "gamma"]
    assert packs["alpha"].error is None and len(packs["alpha"].node_types) == 13
    assert registry.specs["toy.add"].pack == "alpha" and registry.specs["toy.add"].version == "1.0.0"
    assert "beta.only" not in registry  # nothing of the failed pack stays
    assert packs["beta"].node_types == () and set(packs["beta"].rejected) == {"beta.only", "toy.add"}
    assert packs["beta"].error == ("node type 'toy.add' is already declared by pack 'alpha'; the pack loaded "
                                   "first keeps the name, so pack 'beta' is left out")
    assert packs["gamma"].error is None and "gamma.ok" in registry
    assert registry.failed_pack("beta.only") is packs["beta"]
    assert registry.failed_pack("toy.nothing") is None


def test_a_pack_that_fails_to_import_is_named_for_its_prefix() -> None:
    def broken() -> object:
        raise ImportError("No module named 'gone_dependency'")

    registry = build_registry([PackSource("gone", "1.0.0", "gone_mod", broken)])
    pack = registry.failed_pack("gone.anything")
    assert pack is not None and pack.error == "ImportError: No module named 'gone_dependency'"
    assert pack.rejected == () and registry.failed_pack("other.anything") is None


def test_a_pack_declaring_one_type_twice_is_left_out() -> None:
    first, second = toy_module(CallCounter()), toy_module(CallCounter())

    class Twice:
        from nodegraph.api import hookimpl

        @hookimpl
        def nodegraph_register(self, registry: object) -> None:
            registry.add_module(first)  # type: ignore[attr-defined]
            registry.add_module(second)  # type: ignore[attr-defined]

    registry = build_registry([PackSource("toy", "1.0.0", "t", Twice)])
    assert registry.specs == {}
    error = registry.packs[0].error
    assert error is not None and "declares node type 'toy.add' twice" in error


@pytest.mark.parametrize(("version", "doc", "reason"), [
    ("one", "A docstring.", "version 'one' is not a semantic version"),
    ("1.0", "A docstring.", "version '1.0' is not a semantic version"),
    ("1.0.0", None, "no docstring"),
    ("1.0.0", "   \n  ", "no docstring"),
])
def test_a_node_breaking_the_rules_fails_its_pack(version: str, doc: str | None, reason: str) -> None:
    @node("bad.first", version="1.0.0")
    def first(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
        """A fine node, registered before the bad one: it must not stay either."""
        return x

    @node("bad.zz_second", version=version)
    def second(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
        return x

    second.__doc__ = doc
    toy = toy_module(CallCounter())
    bad_nodes = _module("bad_nodes", first, second)
    registry = build_registry([PackSource("bad", "1.0.0", "m", lambda: ToyPack(bad_nodes)),
                               PackSource("toy", "1.0.0", "t", lambda: ToyPack(toy))])
    bad, good = registry.packs
    assert bad.error is not None and reason in bad.error and "bad.zz_second" in bad.error
    assert "bad.first" not in registry and bad.node_types == () and bad.rejected == ("bad.first",)
    assert good.error is None and "toy.add" in registry


def test_plugins_and_validate_through_the_cli(tmp_path: Path) -> None:
    registry = _registry()
    runner = CliRunner()
    listing = runner.invoke(app, ["plugins"], obj={"registry": registry})
    assert listing.exit_code == 0 and "Traceback" not in listing.output
    assert "failed: node type 'toy.add' is already declared by pack 'alpha'" in listing.output
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nnodes:\n  a: {type: toy.number, value: 1}\n  g: {type: gamma.ok, x: '@a'}\n")
    ok = runner.invoke(app, ["validate", str(good)], obj={"registry": registry})
    assert ok.exit_code == 0 and f"OK {good}" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnodes:\n  b: {type: beta.only}\n")
    refused = runner.invoke(app, ["validate", str(bad)], obj={"registry": registry})
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert (f"{bad}:3: node 'b', field 'type': unknown node type 'beta.only' (see `nodegraph nodes`); "
            "pack 'beta' failed to load, see `nodegraph plugins`") in refused.output
    page = runner.invoke(app, ["nodes", "beta.only"], obj={"registry": registry})
    assert page.exit_code == 2 and "pack 'beta' failed to load" in page.output


def _fake_distribution(root: Path, dist: str, entry: str, module: str, body: str) -> None:
    """An installed distribution as importlib.metadata sees one: a dist-info folder on sys.path."""
    info = root / f"{dist}-9.9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 9.9.9\n")
    (info / "entry_points.txt").write_text(f"[nodegraph]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(body)


INTRUDER_PACK = '''\
from typing import Annotated
from pydantic import Field
from nodegraph.api import hookimpl, node


@node("core.number", version="9.0.0")
def number(value: Annotated[float, Field(description="Value")] = 0.0) -> float:
    """Redeclares a built-in node type."""
    return value


@hookimpl
def nodegraph_register(registry):
    import sys
    registry.add_module(sys.modules[__name__])
'''


def test_an_installed_pack_cannot_take_a_built_in_name(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through real entry points: 'aaa' sorts before 'core', yet the built-in pack keeps its names."""
    _fake_distribution(tmp_path, "aaa_intruder", "aaa", "aaa_intruder_pack", INTRUDER_PACK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "aaa_intruder_pack", raising=False)
    names = [s.name for s in entry_point_sources()]
    assert names.index("core") < names.index("aaa")
    monkeypatch.setenv("NODEGRAPH_PACKS", "core,aaa")
    result = CliRunner().invoke(app, ["plugins"])
    monkeypatch.delitem(sys.modules, "aaa_intruder_pack", raising=False)
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines()
            if line.split()[1:2] in (["aaa"], ["core"])}
    assert "failed: node type 'core.number' is already declared by pack 'core'" in rows["aaa"]
    assert "9.9.9" in rows["aaa"] and "ok" in rows["core"]
