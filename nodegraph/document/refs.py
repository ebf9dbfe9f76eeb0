"""The little language of input values: `@node`, `@node.output`, `$param`, and `@@`/`$$` escapes.

Only whole values and the items of a list are read this way; strings nested deeper (inside a
mapping literal) are always literal. A literal string that must start with `@` or `$` is written
with the sign doubled (`"@@home"` is the text `@home`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ID_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]*"
OUTPUT_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
ID_RE = re.compile(rf"^{ID_PATTERN}$")
LINK_RE = re.compile(rf"^@({ID_PATTERN})(?:\.({OUTPUT_PATTERN}))?$")
PARAM_RE = re.compile(rf"^\$({ID_PATTERN})$")
LINK_JSON_PATTERN = rf"^@{ID_PATTERN}(\.{OUTPUT_PATTERN})?$"
PARAM_JSON_PATTERN = rf"^\${ID_PATTERN}$"


@dataclass(frozen=True)
class LinkRef:
    """`@node` (output None: the node's single output) or `@node.output`."""

    node: str
    output: str | None
    text: str


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class BadRef:
    """A string that starts like a reference but is not a valid one; `message` says how to fix it."""

    message: str


Ref = LinkRef | ParamRef | BadRef


def read_ref(value: Any) -> Ref | None:
    """The reference `value` spells, or None if it is a literal (escaped literals included)."""
    if not isinstance(value, str) or not value.startswith(("@", "$")) or value.startswith(("@@", "$$")):
        return None
    if value.startswith("@"):
        m = LINK_RE.match(value)
        if m is None:
            return BadRef(f"'{value}' is not a valid link (write '@node' or '@node.output'; "
                          f"'@@' for text starting with '@')")
        return LinkRef(m.group(1), m.group(2), value)
    m = PARAM_RE.match(value)
    if m is None:
        return BadRef(f"'{value}' is not a valid param reference (write '$name'; '$$' for text "
                      f"starting with '$')")
    return ParamRef(m.group(1))


def unescape(value: Any) -> Any:
    """The literal a non-reference value stands for (`@@x` -> `@x`, `$$x` -> `$x`)."""
    if isinstance(value, str) and value.startswith(("@@", "$$")):
        return value[1:]
    return value


def escape(value: Any) -> Any:
    """Write a literal so that it reads back as the same literal (inverse of `unescape`)."""
    if isinstance(value, str) and value.startswith(("@", "$")):
        return value[0] + value
    if isinstance(value, list):
        return [escape(v) for v in value]
    return value


def with_article(word: str) -> str:
    """`a float`, `an int`, `an Image`: for messages."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word
