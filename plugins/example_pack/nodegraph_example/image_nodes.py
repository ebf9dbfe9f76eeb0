"""Image nodes of the example pack: how a pack makes and transforms `Image`s.

Only `nodegraph.api` is imported from the engine. torch is imported inside the node that needs it,
so listing or validating graphs never pays for it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import Image, node


@node("example.checkerboard", version="1.0.0")
def checkerboard(
    width: Annotated[int, Field(ge=8, le=4096, description="Width in pixels")] = 64,
    height: Annotated[int, Field(ge=8, le=4096, description="Height in pixels")] = 64,
    square: Annotated[int, Field(ge=1, le=512, description="Side of one square in pixels")] = 8,
) -> Image:
    """A black and white checkerboard, white in the top-left corner."""
    import torch

    ys = torch.arange(height).div(square, rounding_mode="floor")
    xs = torch.arange(width).div(square, rounding_mode="floor")
    white = ((ys[:, None] + xs[None, :]) % 2 == 0).to(torch.float32)  # (H, W), 1.0 = white
    pixels = white.expand(1, 3, height, width).contiguous()  # (B, 3, H, W), float32 in [0, 1], CPU
    return Image(pixels=pixels)


@node("example.invert", version="1.0.0")
def invert(image: Annotated[Image, Field(description="Images to invert")]) -> Image:
    """Invert the colours of every image in the batch (1 - pixels)."""
    return Image(pixels=1.0 - image.pixels)  # a new tensor: inputs are never changed in place
