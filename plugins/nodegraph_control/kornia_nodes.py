"""Canny as ComfyUI computes it (its `Canny` class): kornia's differentiable Canny on float images.

Why next to `control.canny` (OpenCV, controlnet_aux's way): ComfyUI's Canny takes float thresholds
in (0, 1) and calls `kornia.filters.canny` (grey conversion, 5x5 Gaussian of sigma 1, Sobel, non-maximum
suppression, hysteresis), whose edges differ from OpenCV's; an imported ComfyUI workflow needs these.
kornia is imported only when the node runs (`pip install -e ".[comfyui]"`).
"""

from __future__ import annotations

from typing import Annotated

from nodegraph_core.types import Image
from pydantic import Field

from nodegraph.api import InputError, node

Threshold = Annotated[float, Field(ge=0.01, le=0.99)]


@node("control.canny_kornia", version="1.0.0")
def canny_kornia(
    image: Annotated[Image, Field(description="Images to find edges in")],
    low_threshold: Annotated[Threshold, Field(description="Lower hysteresis threshold (gradient, 0..1)")]
    = 0.4,
    high_threshold: Annotated[Threshold, Field(description="Upper hysteresis threshold (gradient, 0..1)")]
    = 0.8,
) -> Image:
    """Canny edge map with kornia, white edges on black, exactly as ComfyUI's Canny node."""
    try:
        from kornia.filters import canny
    except ImportError as exc:
        raise InputError(f"ComfyUI's Canny needs the 'kornia' package: pip install kornia ({exc})",
                         field="image") from exc
    if low_threshold > high_threshold:
        raise InputError(f"low threshold {low_threshold} is above high threshold {high_threshold}",
                         field="low_threshold")
    _, edges = canny(image.pixels, low_threshold, high_threshold)
    return Image(edges.repeat(1, 3, 1, 1).contiguous())
