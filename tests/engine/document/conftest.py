"""Shared helpers for the document-layer tests: registries and the malformed-graph corpus."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nodegraph.nodes.registry import Registry
from nodegraph.testing import toy_registry

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INVALID = FIXTURES / "invalid"
GRAPHS_OK = FIXTURES / "graphs_ok"

# Corpus files that cannot hold a `# expect:` comment (JSON, empty, binary).
SIDECAR: dict[str, dict[str, object]] = {
    "empty.yaml": {"expect": ["the file is empty"]},
    "binary_junk.yaml": {"expect": ["binary file"]},
    "json_syntax_error.json": {"expect": ["invalid JSON: Expecting ',' delimiter"], "line": 5},
    "duplicate_node_id.json": {"expect": ["duplicate key 'a' (lines 4 and 5)"], "line": 5},
    "huge_int_5000_digits.json": {"expect": ["integer literal with 5000 digits is too long"], "line": 5},
    "port_type_mismatch.json": {"expect": ["output 'a.out' is float, input 'parts' expects str"],
                                "node": "b", "field": "parts", "line": 6},
}


@dataclass
class Case:
    """One corpus file and what loading it must report."""

    path: Path
    expect: list[str] = field(default_factory=list)
    node: str | None = None
    field: str | None = None
    line: int | None = None


def read_case(path: Path) -> Case:
    case = Case(path)
    if path.name in SIDECAR:
        spec = SIDECAR[path.name]
        case.expect = list(spec["expect"])  # type: ignore[call-overload]
        case.node = spec.get("node")  # type: ignore[assignment]
        case.field = spec.get("field")  # type: ignore[assignment]
        case.line = spec.get("line")  # type: ignore[assignment]
        return case
    for text in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^# (expect|node|field|line): (.*)$", text)
        if not m:
            continue
        key, value = m.groups()
        if key == "expect":
            case.expect.append(value)
        elif key == "line":
            case.line = int(value)
        else:
            setattr(case, key, value)
    return case


def corpus() -> list[Path]:
    return sorted(p for p in INVALID.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The toy pack plus every installed pack (core.* included)."""
    return toy_registry(with_installed=True)


@pytest.fixture(scope="module")
def toys() -> Registry:
    """The toy pack alone."""
    return toy_registry()
