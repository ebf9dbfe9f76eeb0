"""The docs match the code: graph listings equal the files they name; the plugin guide's code runs,
keeps the node contract and imports only from the public modules.

Graph listings are compared as YAML data (both sides parsed), not as text, so a listing may carry
explanatory comments and its own alignment but no different value.
"""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from nodegraph.testing import PackSource, ToyPack, contract_problems

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "plugins" / "example_pack"
GUIDE = ROOT / "docs" / "plugins.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PUBLIC = {"nodegraph", "nodegraph.api", "nodegraph.testing"}
FENCE = re.compile(r"^```(\w*)\s*$")
NAMED_FILE = re.compile(r"`([\w./-]+\.(?:ya?ml|json))`")
IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence
    lang: str
    text: str
    before: str  # the last non-blank line before the fence

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def label(self) -> str | None:
        """The file a block says it is, from a first line like `# nodegraph_example/nodes.py`."""
        first = self.text.splitlines()[0] if self.text else ""
        match = re.fullmatch(r"#\s*([\w./-]+\.(?:py|ya?ml|json|toml))\s*", first)
        return match.group(1) if match else None


def blocks(doc: Path, lang: str) -> list[Block]:
    found, lines = [], doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        if match.group(1) == lang:
            found.append(Block(doc, i + 1, lang, "\n".join(lines[i + 1:end]) + "\n", before))
        i = end + 1
    return found


def _imported_modules(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in IMPORT.finditer(text)}


def _is_engine_internal(module: str) -> bool:
    top = module.partition(".")[0]
    return top.startswith("nodegraph") and top != "nodegraph_example" and module not in PUBLIC


# -- graph listings -----------------------------------------------------------------------------------

def listings() -> list[tuple[Block, Path]]:
    found = []
    for doc in DOCS:
        for block in blocks(doc, "yaml"):
            named = block.label or next(iter(NAMED_FILE.findall(block.before)), None)
            if named is not None:
                found.append((block, ROOT / named))
    return found


def test_the_readme_has_graph_listings_to_check() -> None:
    assert any(path == ROOT / "graphs" / "txt2img.yaml" for _, path in listings())


@pytest.mark.parametrize(("block", "path"), listings(), ids=[b.where for b, _ in listings()])
def test_a_graph_listing_equals_the_file_it_names(block: Block, path: Path) -> None:
    assert path.is_file(), f"{block.where} names {path.relative_to(ROOT)}, which does not exist"
    listed, actual = yaml.safe_load(block.text), yaml.safe_load(path.read_text())
    assert isinstance(listed, dict) and isinstance(actual, dict), block.where
    differences = []
    for key in sorted(set(listed) | set(actual)):
        mine, theirs = listed.get(key), actual.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):  # name the param or node that differs
            differences += [f"{key}.{name}: listed {mine.get(name)!r}, file {theirs.get(name)!r}"
                            for name in sorted(set(mine) | set(theirs)) if mine.get(name) != theirs.get(name)]
        elif mine != theirs:
            differences.append(f"{key}: listed {mine!r}, file {theirs!r}")
    assert not differences, f"{block.where} differs from {path.relative_to(ROOT)}:\n" + "\n".join(differences)


# -- code in the guides -------------------------------------------------------------------------------

def python_blocks() -> list[Block]:
    return [b for doc in (ROOT / "README.md", GUIDE) for b in blocks(doc, "python")]


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.where)
def test_examples_import_only_public_modules(block: Block) -> None:
    internal = sorted(m for m in _imported_modules(block.text) if _is_engine_internal(m))
    assert not internal, f"{block.where} imports {internal}; use {sorted(PUBLIC)}"


@pytest.mark.parametrize("block", [b for b in blocks(GUIDE, "python")], ids=lambda b: b.where)
def test_a_guide_block_is_a_complete_module_or_marked_as_a_fragment(block: Block) -> None:
    try:
        compile(block.text, block.where, "exec")
    except SyntaxError as exc:
        assert "..." in block.text, f"{block.where} does not compile, and no '...' marks a fragment: {exc}"


def _same_as_file(block: Block) -> None:
    """Every import, function and class of a labelled block is in the example pack's file, unchanged."""
    path = EXAMPLE / block.label  # type: ignore[operator]
    assert path.is_file(), f"{block.where} is labelled {block.label}: no such file in the example pack"
    in_file = {ast.dump(node) for node in ast.parse(path.read_text()).body}
    for node in ast.parse(block.text).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a module docstring may differ
        name = getattr(node, "name", None) or ast.unparse(node)
        assert ast.dump(node) in in_file, f"{block.where}: '{name}' differs from {path.relative_to(ROOT)}"


def _exec(block: Block, name: str) -> ModuleType:
    module = ModuleType(name)
    module.__file__ = block.where
    exec(compile(block.text, block.where, "exec"), module.__dict__)  # noqa: S102 - the docs' own code
    return module


def _check_nodes(module: ModuleType, block: Block) -> None:
    funcs = [f for f in vars(module).values() if callable(f) and hasattr(f, "__nodegraph_node__")]
    for pack in {f.__nodegraph_node__.type_name.partition(".")[0] for f in funcs}:
        problems = contract_problems(PackSource(pack, "1.0.0", module.__name__, lambda: ToyPack(module)))
        assert not problems, f"{block.where}: " + "; ".join(problems)


def _run_tests(module: ModuleType, tmp_path: Path) -> list[str]:
    ran = []
    for name, func in vars(module).items():
        if name.startswith("test_") and callable(func):
            params = inspect.signature(func).parameters
            func(**({"tmp_path": tmp_path / name} if "tmp_path" in params else {}))
            ran.append(name)
    return ran


def complete_blocks() -> list[Block]:
    found = []
    for block in python_blocks():
        try:
            compile(block.text, block.where, "exec")
        except SyntaxError:
            continue
        if block.doc == GUIDE or "@node(" in block.text:  # README's library example needs real models
            found.append(block)
    return found


@pytest.mark.parametrize("block", complete_blocks(), ids=lambda b: b.where)
def test_a_complete_example_runs_and_keeps_the_contract(block: Block, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    if block.label:
        _same_as_file(block)
    (tmp_path / "t").mkdir()
    module = _exec(block, f"doc_block_{block.line}")
    _check_nodes(module, block)
    ran = _run_tests(module, tmp_path / "t")
    if block.label and block.label.startswith("tests/"):
        assert ran, f"{block.where} is a test module without tests"


def test_the_guide_shows_the_example_pack_and_its_tests() -> None:
    labels = {b.label for b in blocks(GUIDE, "python")}
    assert {"nodegraph_example/nodes.py", "nodegraph_example/image_nodes.py", "nodegraph_example/__init__.py",
            "tests/test_example_nodes.py"} <= labels


def test_the_guide_pyproject_snippet_is_in_the_example_pack() -> None:
    actual: dict[str, Any] = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    for block in blocks(GUIDE, "toml"):
        snippet = tomllib.loads(block.text)
        assert snippet["project"]["entry-points"]["nodegraph"].items() \
            <= actual["project"]["entry-points"]["nodegraph"].items(), block.where
