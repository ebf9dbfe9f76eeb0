"""Plain value nodes: numbers and text, handy for wiring and for engine tests."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import node


@node("core.number", version="1.0.0")
def number(value: Annotated[float, Field(description="The number to pass on")]) -> float:
    """Pass a number on, so several nodes can share one value."""
    return value


@node("core.integer", version="1.0.0")
def integer(value: Annotated[int, Field(description="The integer to pass on")]) -> int:
    """Pass an integer on, so several nodes can share one value."""
    return value


@node("core.text", version="1.0.0")
def text(value: Annotated[str, Field(description="The text to pass on")]) -> str:
    """Pass a text on, so several nodes can share one prompt."""
    return value


@node("core.join_text", version="1.0.0")
def join_text(
    parts: Annotated[list[str], Field(description="Texts to join, in order")],
    separator: Annotated[str, Field(description="Put between parts")] = ", ",
) -> str:
    """Join texts into one prompt."""
    return separator.join(parts)
