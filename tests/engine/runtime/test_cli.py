"""The command line: exit codes, messages without tracebacks, listings, reports, the disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field
from typer.testing import CliRunner

from nodegraph.api import NodeContext, node
from nodegraph.cli.app import app, model_dirs
from nodegraph.nodes.registry import PackSource, build_registry
from nodegraph.testing import CallCounter, ToyPack, toy_module, toy_registry

ROOT = Path(__file__).resolve().parents[3]

BAD = """\
version: 1
nodes:
  a: {type: toy.numbr, value: 1}
  b: {type: toy.add, a: "@zz", c: 2}
"""

GOOD = """\
version: 1
params:
  x: {type: float, default: 2.0}
nodes:
  n: {type: toy.number, value: $x}
  s: {type: toy.scale, x: "@n", factor: 3}
  w: {type: toy.write_text, text: "hello", path: notes/hi.txt}
"""


def invoke(args: list[str], registry: object | None = None, **kwargs: object):
    return CliRunner().invoke(app, args, obj={"registry": registry or toy_registry()}, **kwargs)


def test_bad_graph_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    graph = tmp_path / "bad.yaml"
    graph.write_text(BAD)
    result = invoke(["run", str(graph), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any("bad.yaml:3: node 'a', field 'type': unknown node type 'toy.numbr'" in ln for ln in lines)
    assert any("bad.yaml:4: node 'b'" in ln and "'zz'" in ln for ln in lines)
    assert any("bad.yaml:4: node 'b', field 'c'" in ln for ln in lines)
    assert not (tmp_path / "out").exists()


def test_missing_graph_file_and_bad_set_exit_2(tmp_path: Path) -> None:
    result = invoke(["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    (tmp_path / "g.yaml").write_text(GOOD)
    result = invoke(["run", str(tmp_path / "g.yaml"), "--set", "novalue"])
    assert result.exit_code == 2 and "must look like name=value" in result.output
    result = invoke(["run", str(tmp_path / "g.yaml"), "--device", "tpu"])
    assert result.exit_code == 2 and "unknown device 'tpu'" in result.output


def test_node_failure_exit_2_with_location(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("version: 1\nnodes:\n  f: {type: toy.fail, x: 3}\n")
    result = invoke(["run", str(graph), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{graph}:3: node 'f', field 'x': cannot use 3.0" in result.output


def test_run_prints_report_and_written_files_and_writes_report_json(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GOOD)
    out = tmp_path / "out"
    result = invoke(["run", str(graph), "--out", str(out), "--set", "x=5", "--report"])
    assert result.exit_code == 0, result.output
    assert "run report" in result.output and "toy.scale" in result.output and "executed" in result.output
    assert f"wrote {out / 'notes' / 'hi.txt'}" in result.output
    assert "s.out = 15.0" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["executed"] == ["n", "s", "w"] and report["cached"] == []
    assert [row["node"] for row in report["nodes"]] == ["n", "s", "w"]
    assert report["written"] == [str(out / "notes" / "hi.txt")]
    assert sorted(p.name for p in out.iterdir()) == ["notes", "report.json"]


def test_ctrl_c_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    module = toy_module(CallCounter())

    @node("toy.interrupt", version="1.0.0")
    def interrupt(ctx: NodeContext, after: Annotated[str, Field(description="Runs after")] = "") -> str:
        """Simulate Ctrl-C."""
        raise KeyboardInterrupt

    interrupt.__module__ = module.__name__
    module.interrupt = interrupt  # type: ignore[attr-defined]
    registry = build_registry([PackSource("toy", "1", "t", lambda: ToyPack(module))])
    graph = tmp_path / "g.yaml"
    graph.write_text("version: 1\nnodes:\n  w: {type: toy.write_text, text: x}\n"
                     "  stop: {type: toy.interrupt, after: '@w'}\n")
    result = invoke(["run", str(graph), "--out", str(tmp_path / "out")], registry)
    assert result.exit_code == 130
    assert "interrupted, nothing written" in result.output
    assert not (tmp_path / "out").exists()


def test_validate_many(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    ok = invoke(["validate", str(tmp_path / "good.yaml")])
    assert ok.exit_code == 0 and f"OK {tmp_path / 'good.yaml'}" in ok.output
    mixed = invoke(["validate", str(tmp_path / "good.yaml"), str(tmp_path / "bad.yaml")])
    assert mixed.exit_code == 2 and "OK" in mixed.output and "unknown node type 'toy.numbr'" in mixed.output


def test_nodes_listing_and_one_type() -> None:
    listing = invoke(["nodes"])
    assert listing.exit_code == 0 and "toy.scale" in listing.output and "toy.write_text" in listing.output
    page = invoke(["nodes", "toy.scale"], terminal_width=200)
    assert page.exit_code == 0
    for text in ("toy.scale", "1.0.0", "Multiply by a small integer factor.", "factor", ">= -100, <= 100",
                 "Integer factor", "(required)", "outputs", "float"):
        assert text in page.output, text
    assert "non-deterministic" in invoke(["nodes", "toy.random"], terminal_width=200).output
    unknown = invoke(["nodes", "toy.scal"])
    assert unknown.exit_code == 2 and "did you mean 'toy.scale'" in unknown.output


def test_plugins_reports_a_broken_pack_without_breaking_others() -> None:
    def broken() -> object:
        raise ImportError("No module named 'missing_dependency'")

    module = toy_module(CallCounter())
    registry = build_registry([PackSource("aaa_broken", "0.3", "broken_pack", broken),
                               PackSource("toy", "1.0.0", "t", lambda: ToyPack(module))])
    assert "toy.add" in registry
    result = invoke(["plugins"], registry, terminal_width=200)
    assert result.exit_code == 0
    assert "aaa_broken" in result.output and "missing_dependency" in result.output
    assert "failed" in result.output
    assert "toy" in result.output and " 13 " in result.output


def test_graph_show_and_schema(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(GOOD)
    for fmt, marker in (("text", "toy.scale"), ("mermaid", "flowchart"), ("dot", "digraph")):
        result = invoke(["graph", "show", str(tmp_path / "g.yaml"), "--format", fmt])
        assert result.exit_code == 0 and marker in result.output, (fmt, result.output)
    assert invoke(["graph", "show", str(tmp_path / "g.yaml"), "--format", "svg"]).exit_code == 2
    schema = invoke(["schema"])
    assert schema.exit_code == 0 and "toy.scale" in json.loads(schema.output).__repr__()


def test_models_option_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NODEGRAPH_MODELS", os.pathsep.join([str(tmp_path / "e1"), str(tmp_path / "e2")]))
    assert model_dirs([tmp_path / "cli"]) == (tmp_path / "cli", tmp_path / "e1", tmp_path / "e2")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NODEGRAPH_PACKS": "core"}
    return subprocess.run([sys.executable, "-m", "nodegraph", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def test_disk_cache_across_processes(tmp_path: Path) -> None:
    graph = ROOT / "graphs" / "core_text.yaml"
    common = ["--cache-dir", str(tmp_path / "cache"), "--report", "--quiet", "--out", str(tmp_path / "o")]
    counts = []
    for extra in ([], [], ["--set", "subject=a blue square"]):
        proc = _cli("run", str(graph), *common, *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((tmp_path / "o" / "report.json").read_text())
        counts.append((report["executed"], report["cached"]))
    assert counts[0] == (["subject", "style", "quality", "prompt"], [])
    assert counts[1] == ([], ["subject", "style", "quality", "prompt"])
    assert counts[2] == (["subject", "prompt"], ["style", "quality"])


def test_entry_points_help(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", "--help"], text=True,
                          capture_output=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "--cache-dir" in proc.stdout and "--allow-pickle" in proc.stdout
    for sub in (["validate", "--help"], ["graph", "show", "--help"], ["nodes", "--help"],
                ["schema", "--help"]):
        assert invoke(sub).exit_code == 0, sub




PATH_PARAM = """\
version: 1
params:
  src: {type: path, default: default.txt}
  label: {type: str, default: data.txt}
nodes:
  w: {type: toy.write_text, text: $src, path: copy.txt}
  l: {type: toy.write_text, text: $label, path: label.txt}
"""


def test_set_path_param_reads_from_the_shell_folder_unless_the_graph_folder_has_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nodegraph.cli.app import paths_from_cwd
    from nodegraph.runtime.engine import Engine

    graph_dir, shell_dir = tmp_path / "graphs", tmp_path / "shell"
    graph_dir.mkdir()
    shell_dir.mkdir()
    graph = graph_dir / "g.yaml"
    graph.write_text(PATH_PARAM)
    (shell_dir / "data.txt").write_text("mine")
    monkeypatch.chdir(shell_dir)
    plan = Engine(toy_registry()).load(graph, {"src": "data.txt", "label": "data.txt"})

    fixed = paths_from_cwd(plan, {"src": "data.txt", "label": "data.txt"})
    assert fixed == {"src": str(shell_dir / "data.txt"), "label": "data.txt"}  # str params untouched

    (graph_dir / "data.txt").write_text("graph's own")
    assert paths_from_cwd(plan, {"src": "data.txt"}) == {"src": "data.txt"}
    assert paths_from_cwd(plan, {"src": "missing.txt"}) == {"src": "missing.txt"}
