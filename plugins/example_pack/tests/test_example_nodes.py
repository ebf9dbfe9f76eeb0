"""How a pack tests itself: the public test kit, the library API, no installation needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodegraph import Engine, NodeFailed, RunOptions
from nodegraph.testing import Registry, assert_contract, pack_registry, pack_source


def registry() -> Registry:
    return pack_registry(pack_source("core", "nodegraph_core"), pack_source("example", "nodegraph_example"))


def test_the_pack_keeps_the_node_contract() -> None:
    assert_contract(pack_source("example", "nodegraph_example"))


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


def test_checkerboard_and_invert(tmp_path: Path) -> None:
    graph = {"version": 1, "nodes": {
        "board": {"type": "example.checkerboard", "width": 16, "height": 8, "square": 4},
        "negative": {"type": "example.invert", "image": "@board"},
    }}
    result = Engine(registry()).run(graph, options=RunOptions(out_dir=tmp_path))
    board = result.outputs["board"]["out"].pixels
    assert tuple(board.shape) == (1, 3, 8, 16) and str(board.dtype) == "torch.float32"
    assert board[0, 0].tolist() == [[1.0] * 4 + [0.0] * 4 + [1.0] * 4 + [0.0] * 4] * 4 \
        + [[0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4] * 4
    assert (board[0, 0] == board[0, 1]).all() and (board[0, 1] == board[0, 2]).all()
    assert (result.outputs["negative"]["out"].pixels == 1.0 - board).all()
