"""Text nodes of the example pack. Only `nodegraph.api` is imported from the engine."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import InputError, node


@node("example.shout", version="1.0.0")
def shout(
    text: Annotated[str, Field(description="Text to shout")],
    marks: Annotated[int, Field(ge=0, le=10, description="How many '!' to append")] = 1,
) -> str:
    """Upper-case a text and add exclamation marks."""
    return text.upper() + "!" * marks


@node("example.repeat", version="1.0.0")
def repeat(
    text: Annotated[str, Field(description="Text to repeat")],
    times: Annotated[int, Field(ge=1, le=100, description="How many copies")] = 2,
    separator: Annotated[str, Field(description="Put between copies")] = " ",
) -> str:
    """Repeat a text several times."""
    if not text:
        raise InputError("nothing to repeat: the text is empty", field="text")
    return separator.join([text] * times)
