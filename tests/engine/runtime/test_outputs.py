"""Outputs are all-or-nothing: staged inside the out dir, moved on success, removed on any failure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from nodegraph import Engine, RunOptions
from nodegraph.api import NodeContext, node
from nodegraph.errors import InputError, NodeFailed
from nodegraph.nodes.registry import PackSource, build_registry
from nodegraph.runtime.staging import STAGING_PREFIX
from nodegraph.testing import CallCounter, ToyPack, toy_module, toy_registry
from tests.engine.runtime.conftest import make_plan


def interrupt_registry() -> object:
    """The toy pack plus `toy.interrupt`, a node that behaves like Ctrl-C in the middle of a run."""
    module = toy_module(CallCounter())

    @node("toy.interrupt", version="1.0.0")
    def interrupt(ctx: NodeContext, after: Annotated[str, Field(description="Runs after this")] = "") -> str:
        """Simulate Ctrl-C."""
        raise KeyboardInterrupt

    interrupt.__module__ = module.__name__
    module.interrupt = interrupt  # type: ignore[attr-defined]
    return build_registry([PackSource("toy", "1.0.0", "t", lambda: ToyPack(module))])


WRITE_THEN_FAIL = {
    "w": {"type": "toy.write_text", "text": "hello", "path": "sub/a.txt"},
    "n": {"type": "toy.number", "value": 1.0},
    "bad": {"type": "toy.fail", "x": "@n"},
}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_success_moves_staged_files_and_removes_staging(tmp_path: Path) -> None:
    engine = Engine(toy_registry())
    out = tmp_path / "out"
    result = engine.run(make_plan(engine.registry, {"w": {"type": "toy.write_text", "text": "hi",
                                                          "path": "sub/a.txt"}}),
                        options=RunOptions(out_dir=out))
    assert result.written == [out / "sub" / "a.txt"]
    assert (out / "sub" / "a.txt").read_text() == "hi"
    assert _files(out) == ["sub", "sub/a.txt"]


def test_failure_after_a_write_leaves_nothing(tmp_path: Path) -> None:
    engine = Engine(toy_registry())
    out = tmp_path / "out"
    with pytest.raises(NodeFailed):
        engine.run(make_plan(engine.registry, WRITE_THEN_FAIL), options=RunOptions(out_dir=out))
    assert not out.exists()  # the run created it, so it is removed again

    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(NodeFailed):
        engine.run(make_plan(engine.registry, WRITE_THEN_FAIL), options=RunOptions(out_dir=out))
    assert _files(out) == ["keep.txt"]


def test_keyboard_interrupt_cleans_up(tmp_path: Path) -> None:
    registry = interrupt_registry()
    engine = Engine(registry)  # type: ignore[arg-type]
    out = tmp_path / "out"
    out.mkdir()
    nodes = {"w": {"type": "toy.write_text", "text": "x", "path": "a.txt"},
             "stop": {"type": "toy.interrupt", "after": "@w"}}
    with pytest.raises(KeyboardInterrupt):
        engine.run(make_plan(registry, nodes), options=RunOptions(out_dir=out))  # type: ignore[arg-type]
    assert _files(out) == []
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())


@pytest.mark.parametrize("bad", ["../escape.txt", "/tmp/abs.txt", "a/../../b.txt", "~/x.txt"])
def test_output_path_traversal_refused(tmp_path: Path, bad: str) -> None:
    """Refused by validation (OutputFile) and again by ctx.output_path, whatever a node passes."""
    from pydantic import ValidationError

    from nodegraph.runtime.context import safe_relative

    registry = toy_registry()
    spec = registry.get("toy.write_text")
    assert spec is not None
    with pytest.raises(ValidationError):
        spec.validate_literal("path", bad)
    with pytest.raises(InputError):
        safe_relative(bad)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_same_output_path_twice_is_an_input_error(tmp_path: Path) -> None:
    engine = Engine(toy_registry())
    nodes = {"w1": {"type": "toy.write_text", "text": "1", "path": "a.txt"},
             "w2": {"type": "toy.write_text", "text": "2", "path": "a.txt"}}
    with pytest.raises(NodeFailed, match="written twice"):
        engine.run(make_plan(engine.registry, nodes), options=RunOptions(out_dir=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_side_effect_node_runs_every_time(tmp_path: Path) -> None:
    counter = CallCounter()
    engine = Engine(toy_registry(counter))
    plan = make_plan(engine.registry, {"w": {"type": "toy.write_text", "text": "hi"}})
    engine.run(plan, options=RunOptions(out_dir=tmp_path))
    again = engine.run(plan, options=RunOptions(out_dir=tmp_path))
    assert again.executed == ["w"] and counter.calls["toy.write_text"] == 2
    assert (tmp_path / "out.txt").read_text() == "hi"


