"""Graph params: the declared, typed knobs of a graph (`$name` in node inputs, `--set name=...`).

A param is declared as a mapping: `{type: int, default: 7, description: ..., minimum: 0,
maximum: 10, choices: [...]}`. `type` is one of str, int, float, bool, path, list. A param without
a default must be given with `--set`. Values are checked here, before any node sees them, so a
wrong `--set` is reported against the param, not against every node that reads it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from nodegraph.document.refs import ID_RE, with_article
from nodegraph.document.source import Source
from nodegraph.errors import Problem

PARAM_TYPES = ("str", "int", "float", "bool", "path", "list")
PARAM_KEYS = ("type", "default", "description", "minimum", "maximum", "choices")
_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class ParamDecl:
    name: str
    type: str
    default: Any  # _NO_DEFAULT when none is declared
    description: str
    minimum: float | None
    maximum: float | None
    choices: tuple[Any, ...] | None
    line: int | None

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def as_document(self, value: Any) -> dict[str, Any]:
        """The declaration as written in a resolved document, with `value` as its default."""
        doc: dict[str, Any] = {"type": self.type, "default": value}
        if self.description:
            doc["description"] = self.description
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.choices is not None:
            doc["choices"] = list(self.choices)
        return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(decl: ParamDecl, value: Any) -> tuple[Any, str | None]:
    """The value converted to the param's type, or an error message."""
    kind = decl.type
    if kind in ("str", "path"):
        ok = isinstance(value, str) and (kind == "str" or bool(value))
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
    elif kind == "float":
        try:
            ok = _is_number(value) and math.isfinite(float(value))
        except OverflowError:  # an int too large for a float
            ok = False
        value = float(value) if ok else value
    elif kind == "bool":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, list)
    if not ok:
        if kind == "float" and _is_number(value):
            return value, f"expects a finite number, got {value}"
        return value, f"expects {with_article(kind)}, got {_describe(value)}"
    if _is_number(value):
        if decl.minimum is not None and value < decl.minimum:
            return value, f"must be >= {decl.minimum}, got {value}"
        if decl.maximum is not None and value > decl.maximum:
            return value, f"must be <= {decl.maximum}, got {value}"
    if decl.choices is not None and value not in decl.choices:
        return value, f"must be one of {', '.join(repr(c) for c in decl.choices)}; got {value!r}"
    return value, None


def _describe(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def read_params(source: Source) -> tuple[dict[str, ParamDecl], set[str], list[Problem]]:
    """Read the `params` section: the valid declarations, every declared name, and the problems."""
    raw = source.data.get("params") if isinstance(source.data, dict) else None
    problems: list[Problem] = []
    decls: dict[str, ParamDecl] = {}
    if raw is None:
        return decls, set(), problems
    if not isinstance(raw, dict):
        problems.append(Problem("'params' must be a mapping of name -> {type: ..., default: ...}",
                                file=source.file, line=source.line("params")))
        return decls, set(), problems
    for name, spec in raw.items():
        line = source.line("params", name)

        def bad(message: str, key: str | None = None, _name: str = name) -> None:
            where = source.line("params", _name, key) if key else source.line("params", _name)
            problems.append(Problem(f"param '{_name}': {message}", file=source.file, line=where))

        if not ID_RE.match(name):
            bad("a param name must start with a letter or '_' and hold only letters, digits, '_' and '-'")
            continue
        if not isinstance(spec, dict):
            bad(f"must be a mapping like {{type: int, default: 7}}, got {_describe(spec)}")
            continue
        unknown = [k for k in spec if k not in PARAM_KEYS]
        for key in unknown:
            close = difflib.get_close_matches(key, PARAM_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(PARAM_KEYS)})"
            bad(f"unknown key '{key}'{hint}", key)
        kind = spec.get("type")
        if kind not in PARAM_TYPES:
            bad(f"'type' must be one of {', '.join(PARAM_TYPES)}, got {kind!r}", "type")
            continue
        bounds: dict[str, float | None] = {}
        for key in ("minimum", "maximum"):
            bound = spec.get(key)
            if bound is not None and not _is_number(bound):
                bad(f"'{key}' must be a number, got {_describe(bound)}", key)
                bound = None
            bounds[key] = bound
        choices = spec.get("choices")
        if choices is not None and not isinstance(choices, list):
            bad("'choices' must be a list", "choices")
            choices = None
        description = spec.get("description", "")
        if not isinstance(description, str):
            bad("'description' must be text", "description")
            description = ""
        decl = ParamDecl(name, kind, spec.get("default", _NO_DEFAULT) if "default" in spec else _NO_DEFAULT,
                         description, bounds["minimum"], bounds["maximum"],
                         tuple(choices) if choices is not None else None, line)
        if decl.has_default:
            _, error = check_value(decl, decl.default)
            if error:
                bad(f"default {error}", "default")
        decls[name] = decl
    return decls, {n for n in raw if ID_RE.match(n)}, problems
