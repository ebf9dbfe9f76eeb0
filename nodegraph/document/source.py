"""Read a graph file into plain data plus the source line of every mapping key.

Why not `yaml.safe_load`: problems must name their line, duplicate keys must be errors (a repeated
node id would silently replace the first node), and the result must be plain JSON-able data (it is
embedded in every PNG we write). So we compose the YAML node tree with a `SafeLoader` subclass and
build the data ourselves, recording lines and rejecting what JSON cannot hold. JSON files go through
`json` (exact JSON semantics) with a scanner hook that records where each object starts.

Nothing here raises anything but `GraphError`: every failure is a `Problem`.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nodegraph.errors import Problem

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_VALUES = 200_000  # guards against alias bombs ("billion laughs")
MAX_DEPTH = 64

Key = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_MERGE_TAG = _TAG + "merge"


class GraphLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # no types
    """SafeLoader without YAML 1.1 timestamps (dates stay strings) and with YAML 1.2 floats (`1e-3`).

    libyaml's parser where PyYAML was built with it: the pure-Python one took 44 ms of a 0.4 s tiny Flux
    run to read graphs/flux.yaml."""


GraphLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TAG + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
GraphLoader.add_implicit_resolver(
    _TAG + "float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class Source:
    """Parsed data and where its keys were written (1-based lines, keyed by path from the root)."""

    data: Any
    lines: dict[Key, int] = field(default_factory=dict)
    file: str | None = None

    def line(self, *path: str | int) -> int | None:
        """The line of the deepest known key on `path` (a field falls back to its node's line)."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return None


@dataclass
class _Budget:
    values: int = 0


class _YamlBuilder:
    """Turns a composed YAML node tree into plain data, recording key lines and problems."""

    def __init__(self, loader: GraphLoader, file: str | None) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[Key, int] = {}
        self.problems: list[Problem] = []
        self.fatal = False  # a value could not be built: validating the rest would only add noise
        self.budget = _Budget()

    def problem(self, message: str, node: yaml.Node, *, fatal: bool = True) -> None:
        self.fatal = self.fatal or fatal
        self.problems.append(Problem(message, file=self.file, line=node.start_mark.line + 1))

    def build(self, node: yaml.Node, path: Key, active: frozenset[int]) -> Any:
        self.budget.values += 1
        if self.budget.values > MAX_VALUES:
            raise _TooBig(f"the document expands to more than {MAX_VALUES} values (alias bomb?)")
        if id(node) in active or len(path) > MAX_DEPTH:
            self.problem("the document is nested too deeply (or an alias refers to itself)", node)
            return None
        active = active | {id(node)}
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, active)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                self.problem(f"unsupported YAML tag '{node.tag}' (use a plain list)", node)
                return None
            return [self.build(item, (*path, i), active) for i, item in enumerate(node.value)]
        if node.tag not in _SCALAR_TAGS:
            self.problem(f"unsupported YAML tag '{node.tag}' (use plain text and numbers)", node)
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except ValueError:  # an integer past Python's int-string conversion limit
            self.problem(too_long_integer(str(node.value)), node)
            return None

    def _mapping(self, node: yaml.MappingNode, path: Key, active: frozenset[int]) -> dict[str, Any]:
        if node.tag != _TAG + "map":
            self.problem(f"unsupported YAML tag '{node.tag}' (use a plain mapping)", node)
            return {}
        merged: dict[str, Any] = {}
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(value_node, path, active, merged)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem("mapping keys must be plain names, not lists or mappings", key_node)
                continue
            key = str(key_node.value)  # as written: `yes:` stays "yes", `1:` stays "1"
            line = key_node.start_mark.line + 1
            if key in seen:
                where = " of node" if path == ("nodes",) else ""
                self.problem(f"duplicate key{where} '{key}' (lines {seen[key]} and {line})", key_node,
                             fatal=False)
                continue
            seen[key] = line
            self.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key), active)
        return {**merged, **result}

    def _merge(self, value: yaml.Node, path: Key, active: frozenset[int], into: dict[str, Any]) -> None:
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for src in sources:
            built = self.build(src, path, active)
            if isinstance(built, dict):
                for key, item in built.items():
                    into.setdefault(key, item)
            else:
                self.problem("a merge key '<<' needs a mapping (or a list of mappings)", src)


class _TooBig(Exception):
    """Internal: stops building a document that expands without bound."""


class _LongInt(Exception):
    """Internal: a JSON integer literal longer than Python converts (`sys.get_int_max_str_digits`)."""

    def __init__(self, digits: str) -> None:
        super().__init__(digits)
        self.digits = digits


def too_long_integer(literal: str) -> str:
    """The problem text for an integer literal Python refuses to convert (a 5000-digit number, say)."""
    digits = sum(ch.isdigit() for ch in literal)
    return (f"integer literal with {digits} digits is too long (Python reads at most "
            f"{sys.get_int_max_str_digits()} digits); no input takes a number this large")


def is_too_long_integer(text: str) -> bool:
    """Whether `text` is an integer literal past Python's int-string conversion limit."""
    limit = sys.get_int_max_str_digits()
    digits = text.strip().lstrip("+-").replace("_", "")
    return bool(limit) and digits.isascii() and digits.isdigit() and len(digits) > limit


def _json_int(literal: str) -> int:
    try:
        return int(literal)
    except ValueError as exc:
        raise _LongInt(literal) from exc


def _decode(raw: bytes, file: str | None) -> tuple[str | None, list[Problem]]:
    if not raw.strip():
        return None, [Problem("the file is empty (expected a graph with 'version' and 'nodes')", file=file)]
    if len(raw) > MAX_FILE_BYTES:
        return None, [Problem(f"the file is too large ({len(raw)} bytes; a graph file is text under "
                              f"{MAX_FILE_BYTES // (1024 * 1024)} MiB)", file=file)]
    if b"\x00" in raw:
        return None, [Problem("this is a binary file, not a YAML or JSON graph", file=file)]
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        return None, [Problem(f"this is a binary file, not UTF-8 text (bad byte at offset {exc.start})",
                              file=file)]


def parse_yaml(text: str, file: str | None) -> tuple[Source | None, list[Problem]]:
    """Parse YAML text (JSON is YAML too) into a `Source`, or the problems that prevent it."""
    loader: GraphLoader | None = None
    try:
        loader = GraphLoader(text)  # the reader already refuses control characters here
        root = loader.get_single_node()
        if root is None:
            return None, [Problem("the file holds no graph (it is empty or only comments)", file=file)]
        builder = _YamlBuilder(loader, file)
        data = builder.build(root, (), frozenset())
    except yaml.MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own depth limit
            return None, [Problem("the document is nested too deeply", file=file)]
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return None, [Problem(f"invalid YAML: {detail}", file=file, line=line)]
    except yaml.YAMLError as exc:
        return None, [Problem(f"invalid YAML: {exc}", file=file)]
    except _TooBig as exc:
        return None, [Problem(str(exc), file=file)]
    except RecursionError:
        return None, [Problem("the document is nested too deeply", file=file)]
    finally:
        if loader is not None:
            loader.dispose()
    if builder.fatal:
        return None, builder.problems
    return Source(data, builder.lines, file), builder.problems


def parse_json(text: str, file: str | None) -> tuple[Source | None, list[Problem]]:
    """Parse JSON text exactly as `json` does, with line numbers for keys of objects and duplicates."""
    lines_of: dict[int, dict[str, int]] = {}
    keep: list[Any] = []  # keeps objects alive so their ids stay unique while we map them
    problems: list[Problem] = []
    decoder = json.JSONDecoder()

    def line_at(text_: str, pos: int) -> int:
        return text_.count("\n", 0, pos) + 1

    def parse_object(s_and_end: tuple[str, int], strict: bool, scan_once: Callable[..., Any],
                     object_hook: Any, object_pairs_hook: Any, memo: Any = None) -> tuple[Any, int]:
        s, start = s_and_end
        pairs, end = json.decoder.JSONObject(  # type: ignore[attr-defined]
            s_and_end, strict, scan_once, None, list, memo)
        key_lines = _json_key_lines(s, start, end, [k for k, _ in pairs], line_at)
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for (key, value), line in zip(pairs, key_lines, strict=True):
            if key in seen:
                problems.append(Problem(f"duplicate key '{key}' (lines {seen[key]} and {line})",
                                        file=file, line=line))
                continue
            seen[key] = line
            result[key] = value
        keep.append(result)
        lines_of[id(result)] = seen
        return result, end

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.parse_int = _json_int  # type: ignore[assignment]
    # the C scanner ignores parse_object, so use the pure-Python one
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        data = decoder.decode(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(f"invalid JSON: {exc.msg} (column {exc.colno})", file=file, line=exc.lineno)]
    except _LongInt as exc:
        return None, [Problem(too_long_integer(exc.digits), file=file,
                              line=text.count("\n", 0, max(text.find(exc.digits), 0)) + 1)]
    except RecursionError:
        return None, [Problem("the document is nested too deeply", file=file)]
    lines: dict[Key, int] = {}
    _collect_json_lines(data, (), lines_of, lines)
    return Source(data, lines, file), problems


def _json_key_lines(s: str, start: int, end: int, keys: list[str],
                    line_at: Callable[[str, int], int]) -> list[int]:
    """Lines of an object's keys: the strings at depth 0 of `s[start:end]` that a ':' follows."""
    found: list[int] = []
    depth = 0
    pos = start
    while pos < end and len(found) < len(keys):
        ch = s[pos]
        if ch == '"':
            close = pos + 1
            while s[close] != '"':
                close += 2 if s[close] == "\\" else 1
            after = close + 1
            while after < end and s[after] in " \t\r\n":
                after += 1
            if depth == 0 and after < end and s[after] == ":":
                found.append(line_at(s, pos))
            pos = close + 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        pos += 1
    first = found[0] if found else line_at(s, start)
    return found + [first] * (len(keys) - len(found))


def _collect_json_lines(data: Any, path: Key, lines_of: dict[int, dict[str, int]],
                        out: dict[Key, int]) -> None:
    stack: list[tuple[Any, Key]] = [(data, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, line in lines_of.get(id(item), {}).items():
                out[(*where, key)] = line
            stack.extend((v, (*where, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*where, i)) for i, v in enumerate(item))


def read_source(path: Path, display: str | None = None) -> tuple[Source | None, list[Problem]]:
    """Read and parse a graph file; `.json` files are strict JSON, anything else YAML."""
    file = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [Problem("graph file not found", file=file)]
    except IsADirectoryError:
        return None, [Problem("this is a folder, not a graph file", file=file)]
    except OSError as exc:
        return None, [Problem(f"cannot read the graph file: {exc.strerror or exc}", file=file)]
    text, problems = _decode(raw, file)
    if text is None:
        return None, problems
    if path.suffix.lower() == ".json":
        return parse_json(text, file)
    return parse_yaml(text, file)


def parse_scalar(text: str) -> Any:
    """Read a `--set` value as a YAML scalar (`3` -> 3, `true` -> True, `a cat` stays a string).

    Flow lists and mappings (`[1, 2]`, `{a: 1}`) are read too; anything else that YAML would
    turn into a structure (`a: b`) or cannot parse stays the original string.
    """
    stripped = text.strip()
    source, problems = parse_yaml(text, None) if stripped else (None, [])
    if source is None or problems:
        return text
    value = source.data
    if isinstance(value, (dict, list)) and not stripped.startswith(("[", "{")):
        return text
    return value
