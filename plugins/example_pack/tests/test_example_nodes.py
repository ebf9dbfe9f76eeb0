"""How a pack tests itself: explicit pack sources, the library API, no installation needed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from nodegraph import Engine, RunOptions
from nodegraph.errors import NodeFailed
from nodegraph.nodes.registry import PackSource, Registry, build_registry


def registry() -> Registry:
    return build_registry([
        PackSource("core", "0", "nodegraph_core", lambda: importlib.import_module("nodegraph_core")),
        PackSource("example", "0", "nodegraph_example", lambda: importlib.import_module("nodegraph_example")),
    ])


def test_repeat_and_cache(tmp_path: Path) -> None:
    engine = Engine(registry())
    graph = {"version": 1, "nodes": {
        "word": {"type": "core.text", "value": "hi"},
        "twice": {"type": "example.repeat", "text": "@word", "times": 2},
    }}
    result = engine.run(graph, options=RunOptions(out_dir=tmp_path))
    assert result.outputs["twice"]["out"] == "hi hi"
    assert engine.run(graph, options=RunOptions(out_dir=tmp_path)).executed == []


def test_empty_text_is_a_user_error(tmp_path: Path) -> None:
    engine = Engine(registry())
    with pytest.raises(NodeFailed) as info:
        engine.run({"version": 1, "nodes": {"r": {"type": "example.repeat", "text": ""}}},
                   options=RunOptions(out_dir=tmp_path))
    assert info.value.problem.field == "text"
