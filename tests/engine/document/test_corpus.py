"""Every malformed graph in tests/fixtures/invalid is refused with a `GraphError` that says why,
both through `load_plan` and through `python -m nodegraph validate` (exit 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph.document.load import load_plan
from nodegraph.errors import GraphError
from nodegraph.nodes.registry import Registry

from .conftest import INVALID, corpus, read_case

REPO = INVALID.parents[2]


def test_corpus_is_large_and_every_file_says_what_it_expects() -> None:
    files = corpus()
    assert len(files) >= 28
    for path in files:
        case = read_case(path)
        assert case.expect, f"{path.name} has no '# expect:' line and no sidecar entry"
        if path.suffix == ".yaml" and path.stat().st_size and path.name != "binary_junk.yaml":
            assert path.read_text().startswith("# "), f"{path.name}: no leading comment"


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_load_plan_refuses(path: Path, registry: Registry) -> None:
    case = read_case(path)
    with pytest.raises(GraphError) as info:
        load_plan(path, registry)
    problems = info.value.problems
    text = str(info.value)
    assert problems
    for expected in case.expect:
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert all(p.file == str(path) for p in problems)
    matching = [p for p in problems if case.expect[0] in str(p)]
    if case.node is not None:
        assert any(p.node == case.node for p in matching), text
    if case.field is not None:
        assert any(p.field == case.field for p in matching), text
    if case.line is not None:
        assert any(p.line == case.line for p in matching), text


def _validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodegraph", "validate", *map(str, paths)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def whole_corpus_cli() -> subprocess.CompletedProcess[str]:
    """One CLI run over the whole corpus (each start costs ~4 s, so one run, checked per file)."""
    return _validate(*corpus())


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_cli_validate_refuses(path: Path, whole_corpus_cli: subprocess.CompletedProcess[str]) -> None:
    case = read_case(path)
    out = whole_corpus_cli.stdout + whole_corpus_cli.stderr
    assert whole_corpus_cli.returncode == 2
    assert "Traceback" not in whole_corpus_cli.stderr
    own = [line for line in out.splitlines() if line.startswith(str(path))]
    assert own, f"no problem reported for {path.name}:\n{out}"
    assert f"OK {path}" not in out
    for expected in case.expect:
        assert any(expected in line for line in own), f"{expected!r} not in:\n" + "\n".join(own)


@pytest.mark.parametrize("name", ["several_problems.yaml", "json_syntax_error.json"])
def test_cli_validate_one_file_exits_2(name: str) -> None:
    path = INVALID / name
    result = _validate(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for expected in read_case(path).expect:
        assert expected in result.stdout + result.stderr
