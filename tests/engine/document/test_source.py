"""Reading files: YAML/JSON details, hostile input, and the document layer staying free of torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph.document.load import load_plan
from nodegraph.document.source import parse_json, parse_scalar, parse_yaml
from nodegraph.errors import GraphError
from nodegraph.nodes.registry import Registry


def test_yaml_lines_and_duplicates() -> None:
    src, problems = parse_yaml("version: 1\nnodes:\n  a:\n    type: x\n    type: y\n", "g.yaml")
    assert src is not None and src.lines[("nodes", "a")] == 3 and src.lines[("nodes", "a", "type")] == 4
    assert [str(p) for p in problems] == ["g.yaml:5: duplicate key 'type' (lines 4 and 5)"]


def test_json_lines_are_exact_even_with_repeated_key_names() -> None:
    text = '{"nodes": {\n "a": {"b": {"type": 1}},\n "b": {\n  "type": 2}}}'
    src, problems = parse_json(text, None)
    assert src is not None and not problems
    assert src.lines[("nodes", "b")] == 3 and src.lines[("nodes", "b", "type")] == 4
    assert src.lines[("nodes", "a", "b", "type")] == 2


@pytest.mark.parametrize("text, message", [
    ("a: &a [*a]\n", "alias refers to itself"),
    ("a: !!binary aGVsbG8=\n", "unsupported YAML tag"),
    ("a: !!set {x, y}\n", "unsupported YAML tag"),
    ("a: !custom 1\n", "unsupported YAML tag"),
    ("[1, 2]: x\n", "mapping keys must be plain names"),
    ("a: \x01\n", "invalid YAML"),
    ("a: *nope\n", "invalid YAML"),
    ("a: 1\n---\nb: 2\n", "invalid YAML"),
    ("{" * 5000, "nested too deeply"),
])
def test_hostile_yaml(text: str, message: str) -> None:
    src, problems = parse_yaml(text, None)
    assert src is None
    assert any(message in p.message for p in problems), problems


def test_deep_json_is_refused() -> None:
    src, problems = parse_json("[" * 100_000 + "]" * 100_000, None)
    assert src is None and "nested too deeply" in problems[0].message


def test_bom_and_crlf(tmp_path: Path, toys: Registry) -> None:
    path = tmp_path / "g.yaml"
    path.write_bytes("\ufeffversion: 1\r\nnodes:\r\n  n: {type: toy.number, value: 1}\r\n".encode())
    assert load_plan(path, toys).nodes["n"].line == 3


def test_scalar_reading_for_overrides() -> None:
    assert parse_scalar("3") == 3 and parse_scalar("2.5") == 2.5 and parse_scalar("1e-3") == 0.001
    assert parse_scalar("true") is True and parse_scalar("null") is None
    assert parse_scalar("a cat") == "a cat" and parse_scalar("a: b") == "a: b"
    assert parse_scalar("[1, 2]") == [1, 2] and parse_scalar("{a: 1}") == {"a": 1}
    assert parse_scalar("@node") == "@node"
    assert parse_scalar("!!python/name:os.system") == "!!python/name:os.system"
    assert parse_scalar("2024-01-01") == "2024-01-01" and parse_scalar("") == ""


def test_python_tags_never_run(tmp_path: Path, toys: Registry) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "g.yaml"
    path.write_text(f"version: 1\nnodes:\n  n: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(GraphError):
        load_plan(path, toys)
    assert not marker.exists()


def test_document_layer_does_not_import_torch() -> None:
    code = ("import sys; import nodegraph.document.load, nodegraph.document.schema, "
            "nodegraph.document.render; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
