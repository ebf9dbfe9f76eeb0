"""No output ever lands outside `--out`, whatever links sit inside it (issue 16, "Safety first").

Before the fix, `out/x -> /elsewhere` plus `core.save_image path: x/escaped.png` wrote
`/elsewhere/escaped.png` and exited 0. Every case goes through the CLI and checks: exit 2, a message
naming node and field, nothing written outside, and no partial outputs (no staging left behind).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nodegraph.nodes.registry import Registry

from .safety_helpers import IMAGE, run_cli, safety_registry, save_graph, tree, write_graph


@pytest.fixture(scope="module")
def calls() -> list[str]:
    return []


@pytest.fixture(scope="module")
def registry(calls: list[str]) -> Registry:
    return safety_registry(calls)


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(out, elsewhere): the output folder, and a folder outside it that must stay empty."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    return out, elsewhere


def _refused(result_output: str, *words: str) -> None:
    assert "node 'save'" in result_output and "field 'path'" in result_output, result_output
    assert "Traceback" not in result_output
    for word in words:
        assert word in result_output, result_output


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
def test_a_link_inside_the_output_folder_is_refused(tmp_path: Path, registry: Registry,
                                                    places: tuple[Path, Path], relative: bool) -> None:
    out, elsewhere = places
    (out / "x").symlink_to(Path("..") / "elsewhere" if relative else elsewhere)
    result = run_cli(registry, str(save_graph(tmp_path, "x/escaped.png")), "--out", str(out))
    assert result.exit_code == 2
    _refused(result.output, "outside the output folder", "symbolic link", "x/escaped.png")
    assert tree(elsewhere) == {}
    assert tree(out) == {"x": "link"}


def test_a_link_in_a_nested_folder_is_refused(tmp_path: Path, registry: Registry,
                                              places: tuple[Path, Path]) -> None:
    out, elsewhere = places
    (out / "a").mkdir()
    (out / "a" / "b").symlink_to(elsewhere)
    result = run_cli(registry, str(save_graph(tmp_path, "a/b/c/escaped.png")), "--out", str(out))
    assert result.exit_code == 2
    _refused(result.output, "symbolic link")
    assert tree(elsewhere) == {}  # not even the folder 'c'
    assert tree(out) == {"a": "dir", "a/b": "link"}


@pytest.mark.parametrize("dangling", [False, True], ids=["existing-target", "dangling"])
def test_a_link_as_the_file_name_is_refused(tmp_path: Path, registry: Registry, places: tuple[Path, Path],
                                            dangling: bool) -> None:
    out, elsewhere = places
    victim = elsewhere / "victim.png"
    if not dangling:
        victim.write_bytes(b"keep me")
    (out / "image.png").symlink_to(victim)
    result = run_cli(registry, str(save_graph(tmp_path, "image.png")), "--out", str(out))
    assert result.exit_code == 2
    _refused(result.output, "symbolic link")
    assert tree(elsewhere) == ({} if dangling else {"victim.png": "file"})
    if not dangling:
        assert victim.read_bytes() == b"keep me"
    assert tree(out) == {"image.png": "link"}


def test_a_dangling_folder_link_is_refused_and_not_created(tmp_path: Path, registry: Registry,
                                                           places: tuple[Path, Path]) -> None:
    out, elsewhere = places
    (out / "x").symlink_to(elsewhere / "missing")
    result = run_cli(registry, str(save_graph(tmp_path, "x/escaped.png")), "--out", str(out))
    assert result.exit_code == 2
    _refused(result.output, "symbolic link")
    assert tree(elsewhere) == {}


def test_the_output_folder_itself_may_be_a_link(tmp_path: Path, registry: Registry,
                                                places: tuple[Path, Path]) -> None:
    _, elsewhere = places
    (tmp_path / "via").symlink_to(elsewhere)
    result = run_cli(registry, str(save_graph(tmp_path, "sub/ok.png")), "--out", str(tmp_path / "via"))
    assert result.exit_code == 0, result.output
    assert tree(elsewhere) == {"sub": "dir", "sub/ok.png": "file"}


def test_a_link_that_stays_inside_the_output_folder_is_followed(tmp_path: Path, registry: Registry,
                                                                places: tuple[Path, Path]) -> None:
    out, elsewhere = places
    (out / "real").mkdir()
    (out / "latest").symlink_to(out / "real")
    result = run_cli(registry, str(save_graph(tmp_path, "latest/ok.png")), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "real" / "ok.png").is_file()
    assert tree(elsewhere) == {}


@pytest.mark.parametrize("name", ["x", "image.png"], ids=["folder-link", "file-link"])
def test_a_link_planted_in_the_staging_folder_is_refused(tmp_path: Path, registry: Registry,
                                                         places: tuple[Path, Path], name: str) -> None:
    out, elsewhere = places
    target = elsewhere if name == "x" else elsewhere / "victim.png"
    graph = write_graph(tmp_path, {
        "img": {"type": "core.load_image", "path": str(IMAGE)},
        "plant": {"type": "safety.plant_link", "image": "@img", "name": name, "target": str(target)},
        "save": {"type": "core.save_image", "image": "@plant",
                 "path": "x/escaped.png" if name == "x" else "image.png"},
    })
    result = run_cli(registry, str(graph), "--out", str(out))
    assert result.exit_code == 2
    _refused(result.output, "staging folder")
    assert tree(elsewhere) == {}
    assert tree(out) == {}  # the staging folder, planted link and all, is gone


def test_a_link_planted_in_the_output_folder_during_the_run_is_refused_when_moving(
        tmp_path: Path, registry: Registry, places: tuple[Path, Path]) -> None:
    out, elsewhere = places
    graph = write_graph(tmp_path, {
        "img": {"type": "core.load_image", "path": str(IMAGE)},
        "save": {"type": "core.save_image", "image": "@img", "path": "x/escaped.png"},
        "plant": {"type": "safety.plant_out_link", "after": "@save", "name": "x", "target": str(elsewhere)},
    })
    result = run_cli(registry, str(graph), "--out", str(out))
    assert result.exit_code == 2
    _refused(result.output, "symbolic link", "moving")
    assert tree(elsewhere) == {}
    assert tree(out) == {"x": "link"}  # the planted link only: no staged files, no staging folder


SWEPT = {
    "n": {"type": "safety.count", "value": "$k"},
    "img": {"type": "core.load_image", "path": str(IMAGE)},
    "save": {"type": "core.save_image", "image": "@img", "path": "x/escaped.png"},
}


@pytest.mark.parametrize("where", ["variant", "manifest"])
def test_a_sweep_refuses_links_in_its_folder(tmp_path: Path, registry: Registry, places: tuple[Path, Path],
                                             where: str) -> None:
    """Sweeps write variants' files themselves (not through staging): the same rule holds there."""
    out, elsewhere = places
    graph = tmp_path / "sweep.json"
    params = {"k": {"type": "int", "default": 1}}
    graph.write_text(json.dumps({"version": 1, "params": params, "nodes": SWEPT}))
    first = run_cli(registry, str(graph), "--out", str(out), "--sweep", "k=1..2")
    assert first.exit_code == 0, first.output
    variant = sorted(p for p in out.iterdir() if p.is_dir())[0]
    if where == "variant":
        shutil.rmtree(variant / "x")
        (variant / "x").symlink_to(elsewhere)
    else:
        (out / "manifest.jsonl").unlink()
        (out / "manifest.jsonl").symlink_to(elsewhere / "stolen.jsonl")
    result = run_cli(registry, str(graph), "--out", str(out), "--sweep", "k=1..2")
    assert result.exit_code == 2
    assert "outside the output folder" in result.output and "symbolic link" in result.output
    assert tree(elsewhere) == {}
