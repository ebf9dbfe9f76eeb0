"""A1111 prompt emphasis: `(word)` x1.1, `((word))` x1.21, `[word]` /1.1, `(word:1.3)`, `\\(` literal.

Parsing only: `parse_emphasis(text)` returns (fragment, weight) pairs; the encoder scales the token
embeddings of each fragment and restores the overall mean, as A1111 does.
"""

from __future__ import annotations

import re

UP = 1.1
DOWN = 1 / 1.1

_TOKEN = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes
    \(|\[|:\s*([+-]?[.\d]+)\s*\)|  # open, (text:weight) close
    \)|]|                          # close
    [^\\()\[\]:]+|                 # plain text
    :                              # a colon that is not a weight
    """,
    re.X,
)


def has_emphasis(text: str) -> bool:
    """Whether `text` uses emphasis syntax (brackets); plain prompts take diffusers' exact path."""
    return any(c in text for c in "()[]")


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) fragments with A1111's rules; adjacent equal weights merge.

    Unbalanced brackets are closed at the end (as A1111 does); a prompt without brackets is one
    fragment of weight 1.0.
    """
    result: list[list[object]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in result[start:]:
            item[1] = float(item[1]) * factor  # type: ignore[arg-type]

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            result.append([token[1:] if len(token) > 1 else token, 1.0])
        elif token == "(":
            round_open.append(len(result))
        elif token == "[":
            square_open.append(len(result))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), UP)
        elif token == "]" and square_open:
            multiply(square_open.pop(), DOWN)
        else:
            result.append([token, 1.0])
    for start in round_open:
        multiply(start, UP)
    for start in square_open:
        multiply(start, DOWN)
    merged: list[tuple[str, float]] = []
    for fragment, w in result:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + str(fragment), float(w))  # type: ignore[arg-type]
        else:
            merged.append((str(fragment), float(w)))  # type: ignore[arg-type]
    return merged or [("", 1.0)]
