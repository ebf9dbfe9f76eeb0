"""Bad inputs that used to end in a traceback (exit 1) through `nodegraph run`: each is now a clear
message, exit 2, nothing half-written (issue 16). A bad `--out` fails before any node runs."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from nodegraph.nodes.registry import Registry
from nodegraph.runtime.staging import STAGING_PREFIX

from .safety_helpers import IMAGE, run_cli, safety_registry, save_graph, tree, write_graph

DIGITS = "7" * 5000  # past Python's default int-string conversion limit (4300)


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def registry(calls: list[str]) -> Registry:
    return safety_registry(calls)


def _count_graph(folder: Path) -> Path:
    return write_graph(folder, {"n": {"type": "safety.count", "value": 1}})


def _enospc(*_: Any, **__: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_out_naming_a_file_fails_before_any_node_runs(tmp_path: Path, registry: Registry,
                                                      calls: list[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    result = run_cli(registry, str(_count_graph(tmp_path)), "--out", str(afile))
    assert result.exit_code == 2
    assert "is a file, not a folder" in result.output and str(afile) in result.output
    assert calls == []  # refused up front, not after the graph computed
    assert afile.read_text() == "mine"


def test_out_below_a_file_fails_before_any_node_runs(tmp_path: Path, registry: Registry,
                                                     calls: list[str]) -> None:
    (tmp_path / "afile").write_text("mine")
    result = run_cli(registry, str(_count_graph(tmp_path)), "--out", str(tmp_path / "afile" / "sub"))
    assert result.exit_code == 2
    assert "cannot be created" in result.output and "is a file" in result.output
    assert calls == []


def test_out_a_dangling_link_fails_before_any_node_runs(tmp_path: Path, registry: Registry,
                                                        calls: list[str]) -> None:
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    result = run_cli(registry, str(_count_graph(tmp_path)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert calls == [] and not (tmp_path / "gone").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_read_only_fails_before_any_node_runs(tmp_path: Path, registry: Registry,
                                                  calls: list[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli(registry, str(_count_graph(tmp_path)), "--out", str(locked / "out"))
    assert result.exit_code == 2
    assert "not writable" in result.output
    assert calls == []


def test_a_file_where_a_folder_is_needed_inside_out(tmp_path: Path, registry: Registry) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("mine")
    result = run_cli(registry, str(save_graph(tmp_path, "x/a.png")), "--out", str(out))
    assert result.exit_code == 2
    assert "node 'save'" in result.output and "is a file, not a folder" in result.output
    assert tree(out) == {"x": "file"} and (out / "x").read_text() == "mine"


def test_full_disk_while_writing_a_png(tmp_path: Path, registry: Registry,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_full(im: Any, fp: Any, filename: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        _enospc()

    monkeypatch.setitem(PILImage.SAVE, "PNG", half_then_full)
    out = tmp_path / "out"
    result = run_cli(registry, str(save_graph(tmp_path, "a.png")), "--out", str(out))
    assert result.exit_code == 2
    assert "node 'save', field 'path'" in result.output and "No space left on device" in result.output
    assert tree(out) == {}  # the half-written PNG went with the staging folder


def test_full_disk_while_making_a_staged_folder(tmp_path: Path, registry: Registry,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if STAGING_PREFIX in str(self) and self.name == "deep":
            _enospc()
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    out = tmp_path / "out"
    result = run_cli(registry, str(save_graph(tmp_path, "deep/a.png")), "--out", str(out))
    assert result.exit_code == 2
    assert "node 'save'" in result.output and "No space left on device" in result.output
    assert tree(out) == {}


def test_a_failed_move_puts_everything_back(tmp_path: Path, registry: Registry,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two outputs, the first replacing an older file: the second move fails, so the first is undone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"older run")
    graph = write_graph(tmp_path, {
        "img": {"type": "core.load_image", "path": str(IMAGE)},
        "one": {"type": "core.save_image", "image": "@img", "path": "a.png"},
        "two": {"type": "core.save_image", "image": "@img", "path": "b.png"},
    })
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst) == out / "b.png":
            _enospc()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    result = run_cli(registry, str(graph), "--out", str(out))
    assert result.exit_code == 2
    assert "cannot move outputs" in result.output and "No space left on device" in result.output
    assert tree(out) == {"a.png": "file"}
    assert (out / "a.png").read_bytes() == b"older run"


def test_a_5000_digit_integer_in_the_graph(tmp_path: Path, registry: Registry, calls: list[str]) -> None:
    graph = tmp_path / "big.yaml"
    graph.write_text(f"version: 1\nnodes:\n  n: {{type: safety.count, value: {DIGITS}}}\n")
    result = run_cli(registry, str(graph), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert f"{graph}:3: integer literal with 5000 digits is too long" in result.output
    assert calls == []


@pytest.mark.parametrize("target", ["k", "n.value"])
def test_a_5000_digit_integer_in_set(tmp_path: Path, registry: Registry, calls: list[str],
                                     target: str) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("version: 1\nparams:\n  k: {type: int, default: 1}\nnodes:\n"
                     "  n: {type: safety.count, value: $k}\n")
    result = run_cli(registry, str(graph), "--out", str(tmp_path / "out"), "--set", f"{target}={DIGITS}")
    assert result.exit_code == 2
    expected = "integer literal with 5000 digits is too long" if target == "k" else "exceeded maximum size"
    assert expected in result.output
    assert calls == []


@pytest.mark.parametrize("node_id", ["img", "save"])
def test_a_nul_character_in_a_file_name(tmp_path: Path, registry: Registry, node_id: str) -> None:
    """Found by test_cli_properties: 'a\\x00b.png' reached open() and ended in a ValueError traceback."""
    graph = write_graph(tmp_path, {
        "img": {"type": "core.load_image", "path": "in\x00.png" if node_id == "img" else str(IMAGE)},
        "save": {"type": "core.save_image", "image": "@img",
                 "path": "a\x00b.png" if node_id == "save" else "a.png"},
    })
    result = run_cli(registry, str(graph), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert f"node '{node_id}', field 'path': a file name cannot contain a NUL character" in result.output
    assert tree(tmp_path / "out") == {}


def test_full_disk_while_writing_the_report(tmp_path: Path, registry: Registry,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import nodegraph.cli.app as cli

    monkeypatch.setattr(cli, "write_json_atomic", _enospc)
    out = tmp_path / "out"
    result = run_cli(registry, str(save_graph(tmp_path, "a.png")), "--out", str(out), "--report")
    assert result.exit_code == 2
    assert "cannot write" in result.output and "report.json" in result.output
    assert "No space left on device" in result.output
    assert tree(out) == {"a.png": "file"}  # the outputs were committed before; no half report


def test_a_folder_given_as_an_image_file_says_so(tmp_path: Path, registry: Registry) -> None:
    """Found by test_cli_properties: a folder was reported as a file that 'does not exist'."""
    (tmp_path / "pictures").mkdir()
    graph = write_graph(tmp_path, {
        "img": {"type": "core.load_image", "path": str(tmp_path / "pictures")},
        "save": {"type": "core.save_image", "image": "@img", "path": "a.png"},
    })
    result = run_cli(registry, str(graph), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "node 'img', field 'path'" in result.output and "is a folder, not an image file" in result.output
    assert tree(tmp_path / "out") == {}


def test_an_infinite_float_default_says_finite(tmp_path: Path, registry: Registry, calls: list[str]) -> None:
    """Found by test_cli_properties: `default: .inf` was 'expects a float, got float inf'."""
    graph = tmp_path / "g.yaml"
    graph.write_text("version: 1\nparams:\n  f: {type: float, default: .inf}\n"
                     "nodes:\n  n: {type: safety.count, value: 1}\n  m: {type: core.number, value: $f}\n")
    result = run_cli(registry, str(graph), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "param 'f': default expects a finite number, got inf" in result.output
    assert calls == []
