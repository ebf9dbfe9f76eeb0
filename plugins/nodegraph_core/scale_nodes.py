"""Image scaling with torch's interpolation, the way ComfyUI scales images (ImageScale, ImageScaleBy).

Why not `core.resize`: that one uses PIL's filters, which antialias when shrinking and treat borders
their own way; ComfyUI's `comfy.utils.common_upscale` calls `torch.nn.functional.interpolate` (no
antialiasing), optionally centre-crops to the new aspect ratio first, and does lanczos through PIL on
8-bit images. Imported ComfyUI workflows need the same pixels, so this node follows it step for step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from nodegraph.api import InputError, node
from nodegraph_core.types import Image

if TYPE_CHECKING:
    import torch

Method = Literal["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def common_upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, height, width) as ComfyUI's common_upscale (its 'bislerp' excepted)."""
    import torch

    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """PIL's LANCZOS on each image rounded down to 8 bits, as ComfyUI's `lanczos` helper does."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    out = []
    for image in samples:
        array = np.clip(255.0 * image.movedim(0, -1).cpu().numpy(), 0, 255).astype(np.uint8)
        resized = PILImage.fromarray(array).resize((width, height), resample=PILImage.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.array(resized).astype(np.float32) / 255.0).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


@node("core.scale", version="1.0.0")
def scale(
    image: Annotated[Image, Field(description="Images to scale")],
    width: Annotated[int, Field(ge=0, le=16384, description="New width (0: from the height, keeping the "
                                                            "aspect ratio; both 0: use scale_by)")] = 0,
    height: Annotated[int, Field(ge=0, le=16384, description="New height (0: from the width)")] = 0,
    scale_by: Annotated[float | None, Field(gt=0, le=16, description="Factor, when width and height are 0 "
                                                                     "(sides rounded)")] = None,
    method: Annotated[Method, Field(description="torch interpolation mode, or PIL lanczos on 8-bit pixels")]
    = "nearest-exact",
    crop: Annotated[Literal["disabled", "center"], Field(
        description="center: cut the image to the new aspect ratio first")] = "disabled",
) -> Image:
    """Scale images with torch interpolation, exactly as ComfyUI's ImageScale / ImageScaleBy.

    Values are not clamped (bicubic may overshoot [0, 1] slightly, as in ComfyUI)."""
    pixels = image.pixels
    h, w = int(pixels.shape[-2]), int(pixels.shape[-1])
    if width == 0 and height == 0:
        if scale_by is None:
            raise InputError("give width and/or height, or scale_by", field="width")
        width, height = round(w * scale_by), round(h * scale_by)
    elif width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    if width < 1 or height < 1:
        raise InputError(f"scaling {w}x{h} by {scale_by} leaves no pixels", field="scale_by")
    return Image(common_upscale(pixels, width, height, method, crop))
