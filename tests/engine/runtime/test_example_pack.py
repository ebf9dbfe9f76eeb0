"""End to end: a third-party pack installed with pip shows up through its entry point and runs.

This is the one test that installs something (into the current venv, offline, no dependencies);
the pack is uninstalled again afterwards.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodegraph import Engine, RunOptions
from nodegraph.errors import NodeFailed
from nodegraph.nodes.registry import PackSource, build_registry

ROOT = Path(__file__).resolve().parents[3]
PACK = ROOT / "plugins" / "example_pack"


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          text=True, capture_output=True, timeout=300)


@pytest.fixture
def installed_example_pack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    build = tmp_path_factory.mktemp("pack")  # build from a copy: never leave build/ in the checkout
    subprocess.run(["cp", "-r", str(PACK), str(build)], check=True)
    proc = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(build / PACK.name))
    if proc.returncode != 0:
        pytest.fail(f"pip install failed:\n{proc.stdout}\n{proc.stderr}")
    try:
        yield
    finally:
        _pip("uninstall", "-y", "-q", "nodegraph-example")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NODEGRAPH_PACKS": "core,example"}
    return subprocess.run([sys.executable, "-m", "nodegraph", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=env)


def test_installed_pack_is_listed_and_runs(installed_example_pack: None, tmp_path: Path) -> None:
    listing = _cli("nodes", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "example.shout" in listing.stdout and "example.repeat" in listing.stdout
    plugins = _cli("plugins", cwd=tmp_path)
    assert "example" in plugins.stdout and "nodegraph_example" in plugins.stdout
    run = _cli("run", str(PACK / "graph.yaml"), "--set", "word=hi", "--out", str(tmp_path / "o"),
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "twice.out = 'HI!! HI!!'" in run.stdout


def test_example_pack_with_explicit_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """How a pack author tests a pack without installing it: an explicit PackSource."""
    monkeypatch.syspath_prepend(str(PACK))
    registry = build_registry([
        PackSource("core", "0", "nodegraph_core", lambda: importlib.import_module("nodegraph_core")),
        PackSource("example", "0.1.0", "nodegraph_example",
                   lambda: importlib.import_module("nodegraph_example")),
    ])
    engine = Engine(registry)
    result = engine.run(PACK / "graph.yaml", {"word": "yo"}, options=RunOptions(out_dir=tmp_path))
    assert result.outputs["twice"]["out"] == "YO!! YO!!"
    with pytest.raises(NodeFailed, match="nothing to repeat"):
        engine.run({"version": 1, "nodes": {"r": {"type": "example.repeat", "text": ""}}},
                   options=RunOptions(out_dir=tmp_path))
