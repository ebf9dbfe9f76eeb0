"""`watch`: re-runs after the graph, a params file or an input file changes; only changed nodes execute."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.errors import NodegraphError
from nodegraph.runtime.report import RunResult
from nodegraph.runtime.watch import watch

GRAPH = """
version: 1
params:
  subject: {{type: str, default: "a red circle"}}
nodes:
  subject: {{type: core.text, value: $subject}}
  quality: {{type: core.text, value: "{quality}"}}
  prompt:  {{type: core.join_text, parts: ["@subject", "@quality"]}}
  picture: {{type: core.load_image, path: in.png}}
  small:   {{type: core.resize, image: "@picture", width: 4, height: 4}}
"""


def _write(path: Path, text: str, tick: list[int]) -> None:
    path.write_text(text)
    tick[0] += 1
    os.utime(path, ns=(tick[0] * 10**9, tick[0] * 10**9))  # distinct stamps however fast the test runs


def _image(path: Path, value: int) -> None:
    PILImage.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def test_watch_reruns_changed_nodes_only(tmp_path: Path) -> None:
    graph, params, tick = tmp_path / "g.yaml", tmp_path / "params.yaml", [0]
    _write(graph, GRAPH.format(quality="sharp"), tick)
    _write(params, "subject: a blue square\n", tick)
    _image(tmp_path / "in.png", 10)
    edits: list[Callable[[], None]] = [
        lambda: _write(graph, GRAPH.format(quality="soft"), tick),  # 1: a literal in the graph
        lambda: None,  # 2: nothing changed: no run
        lambda: _write(params, "subject: a green star\n", tick),  # 3: the params file
        lambda: _image(tmp_path / "in.png", 200),  # 4: an input file
        lambda: _write(graph, "version: 1\nnodes: {a: {type: core.nope}}\n", tick),  # 5: broken
        lambda: _write(graph, GRAPH.format(quality="soft"), tick),  # 6: fixed again
    ]
    results: list[RunResult] = []
    errors: list[NodegraphError] = []

    def sleep(_seconds: float) -> None:
        edits.pop(0)()

    state = watch(Engine(), graph, options=RunOptions(out_dir=tmp_path / "out"), params_file=params,
                  on_result=results.append, on_error=errors.append, max_polls=6, sleep=sleep)
    assert state.runs == 6 and state.failures == 1 and len(results) == 5
    assert results[0].outputs["prompt"]["out"].startswith("a blue square")
    assert sorted(results[1].executed) == ["prompt", "quality"]
    assert sorted(results[2].executed) == ["prompt", "subject"]
    assert results[2].outputs["prompt"]["out"].startswith("a green star")
    assert sorted(results[3].executed) == ["picture", "small"]
    assert "core.nope" in str(errors[0])
    assert results[4].executed == []  # back to a graph already run: everything from the cache
    assert tmp_path / "in.png" in state.files


def test_watch_stops_after_max_runs(tmp_path: Path) -> None:
    graph, tick = tmp_path / "g.yaml", [0]
    _write(graph, GRAPH.format(quality="a"), tick)
    _image(tmp_path / "in.png", 1)
    count = iter(range(100))

    def sleep(_seconds: float) -> None:
        _write(graph, GRAPH.format(quality=f"q{next(count)}"), tick)

    state = watch(Engine(), graph, options=RunOptions(out_dir=tmp_path / "out"), max_runs=3, sleep=sleep)
    assert state.runs == 3
