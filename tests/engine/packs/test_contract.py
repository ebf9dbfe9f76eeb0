"""The node contract checks of `nodegraph.testing`: each rule fails a node that breaks it, and the
built-in and example packs pass them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import pytest
from pydantic import Field

from nodegraph.api import Image, hookimpl, node
from nodegraph.nodes.registry import entry_point_sources
from nodegraph.testing import (
    Animal,
    CallCounter,
    PackSource,
    ToyPack,
    assert_contract,
    contract_problems,
    pack_registry,
    pack_source,
    toy_module,
)

ROOT = Path(__file__).resolve().parents[3]


def _source(*funcs: Any, pack: str = "mine") -> PackSource:
    module = ModuleType(f"{pack}_nodes")
    for func in funcs:
        func.__module__ = module.__name__
        setattr(module, func.__name__, func)
    return PackSource(pack, "1.0.0", module.__name__, lambda: ToyPack(module))


def _good(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
    """A node that keeps every rule."""
    return x


def _no_description(x: float = 0.0) -> float:
    """An input without a description."""
    return x


def _port_without_description(image: Image) -> float:
    """A port input without a description."""
    return 0.0


def _two_line_summary(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
    """A summary that runs on
    to a second line."""
    return x


def _default_out_of_range(x: Annotated[int, Field(ge=0, le=10, description="Small")] = 11) -> int:
    """A default its own range refuses."""
    return x


def _default_on_a_port(pet: Annotated[Animal, Field(description="A pet")] = "nope") -> float:  # type: ignore[assignment]
    """A link-only input (a plain class) with a default."""
    return 0.0


def _bad_image_default(image: Annotated[Image, Field(description="Pixels")] = "nope") -> float:  # type: ignore[assignment]
    """An Image input with a default that is no Image."""
    return 0.0


def _no_return_type(x: Annotated[float, Field(description="Value")] = 0.0):  # type: ignore[no-untyped-def]
    """No output type."""
    return x


@pytest.mark.parametrize(("type_name", "func", "expected"), [
    ("mine.no_description", _no_description, "mine.no_description: input 'x' has no description"),
    ("mine.port", _port_without_description, "mine.port: input 'image' has no description"),
    ("mine.summary", _two_line_summary, "mine.summary: the docstring's summary must fit on its first line"),
    ("mine.range", _default_out_of_range, "mine.range: default 11 of input 'x' is not a valid value: "
                                          "Input should be less than or equal to 10"),
    ("mine.port_default", _default_on_a_port, "mine.port_default: input 'pet' takes links only"),
    ("mine.image_default", _bad_image_default, "mine.image_default: default 'nope' of input 'image' is not"),
    ("mine.untyped", _no_return_type, "mine.untyped: output 'out' has no declared type"),
    ("other.prefix", _good, "other.prefix: type name must start with its pack's name 'mine.'"),
    ("Mine.Bad-Name", _good, "Mine.Bad-Name: type name must look like 'pack.node'"),
])
def test_each_rule_fails_a_node_that_breaks_it(type_name: str, func: Any, expected: str) -> None:
    source = _source(node(type_name, version="1.0.0")(func))
    problems = contract_problems(source)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    with pytest.raises(AssertionError, match="1 contract problem"):
        assert_contract(source)


def test_a_node_keeping_every_rule_passes_and_rules_the_registry_enforces_are_reported() -> None:
    assert contract_problems(_source(node("mine.good", version="1.2.3-rc.1")(_good))) == []

    def versioned(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
        """A bad version."""
        return x

    problems = contract_problems(_source(node("mine.v", version="one")(versioned)))
    assert problems == ["pack 'mine' failed to load: TypeError: mine.v: version 'one' is not a semantic "
                        "version MAJOR.MINOR.PATCH like '1.0.0'"]

    class Empty:
        @hookimpl
        def nodegraph_register(self, registry: object) -> None:
            """Registers nothing."""

    empty = PackSource("empty", "1.0.0", "e", Empty)
    assert contract_problems(empty) == ["pack 'empty' registers no node types"]


def test_every_installed_pack_and_the_example_pack_keep_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for source in entry_point_sources():
        assert_contract(source)
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "example_pack"))
    assert_contract(pack_source("example", "nodegraph_example"))


def test_pack_registry_fails_loudly_on_a_pack_left_out() -> None:
    toy = toy_module(CallCounter())
    registry = pack_registry(PackSource("toy", "1.0.0", "t", lambda: ToyPack(toy)))
    assert "toy.add" in registry
    clash = toy_module(CallCounter())
    with pytest.raises(AssertionError, match="pack 'again' failed to load: node type 'toy.add' is already"):
        pack_registry(PackSource("toy", "1.0.0", "t", lambda: ToyPack(toy)),
                      PackSource("again", "1.0.0", "a", lambda: ToyPack(clash)))
    core = pack_source("core", "nodegraph_core")
    assert core.version == "0.1.0" and core.module == "nodegraph_core"


def test_nodegraph_works_without_pytest_and_the_test_kit_says_it_needs_it() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # as if pytest were not installed
        "import nodegraph, nodegraph.api\n"
        "assert 'nodegraph.testing' not in sys.modules\n"
        "try:\n    import nodegraph.testing\n"
        "except ModuleNotFoundError as exc:\n    print('MESSAGE', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "MESSAGE nodegraph.testing is a pytest plugin and needs pytest: pip install pytest" in proc.stdout


def test_the_example_packs_own_tests_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """plugins/example_pack/tests sit outside the suite's testpaths: run them here, as their author would."""
    import importlib.util
    import inspect

    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "example_pack"))
    path = ROOT / "plugins" / "example_pack" / "tests" / "test_example_nodes.py"
    spec = importlib.util.spec_from_file_location("example_pack_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ran = []
    for name, func in vars(module).items():
        if name.startswith("test_") and callable(func):
            (tmp_path / name).mkdir()
            wants = inspect.signature(func).parameters
            func(**({"tmp_path": tmp_path / name} if "tmp_path" in wants else {}))
            ran.append(name)
    assert "test_checkerboard_and_invert" in ran and len(ran) == 4
