"""Mask and compositing nodes with ComfyUI's arithmetic: grow, pad for outpainting, masked composite, invert.

Why ComfyUI's exact arithmetic: these nodes serve imported ComfyUI workflows (GrowMask,
ImagePadForOutpaint, ImageCompositeMasked, ImageInvert), whose users expect the same masks and pixels
as ComfyUI gives. Each docstring names what it follows (ComfyUI's `nodes.py` / `comfy_extras/nodes_mask.py`);
the layout is nodegraph's: images (B, 3, H, W), masks (B, 1, H, W), 1 = repaint.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from pydantic import Field

from nodegraph.api import node
from nodegraph_core.types import Image, Mask

# A catalogue module: numpy, scipy and torch are imported inside the node bodies.
Pixels = Annotated[int, Field(ge=0, le=8192)]


@node("core.grow_mask", version="1.0.0")
def grow_mask(
    mask: Annotated[Mask, Field(description="Masks to grow or shrink")],
    expand: Annotated[int, Field(ge=-256, le=256, description="Pixels to grow by (negative: shrink)")] = 0,
    tapered_corners: Annotated[bool, Field(
        description="A plus-shaped step (rounder corners) rather than a 3x3 square")] = True,
) -> Mask:
    """Grow (or shrink) masks one pixel per step, as ComfyUI's GrowMask does.

    Each step is scipy's grey dilation (erosion when shrinking) with a 3x3 footprint whose corners are
    off when `tapered_corners`; grey levels are kept, so a soft mask stays soft."""
    import numpy as np
    import scipy.ndimage
    import torch

    c = 0 if tapered_corners else 1
    footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    step = scipy.ndimage.grey_erosion if expand < 0 else scipy.ndimage.grey_dilation
    planes = []
    for plane in mask.pixels.detach().cpu().float().reshape(-1, *mask.pixels.shape[-2:]).numpy():
        out = plane
        for _ in range(abs(expand)):
            out = step(out, footprint=footprint)
        planes.append(torch.from_numpy(np.ascontiguousarray(out)))
    return Mask(torch.stack(planes).reshape(mask.pixels.shape).contiguous())


class Outpaint(NamedTuple):
    image: Image
    mask: Mask


@node("core.pad_for_outpaint", version="1.0.0")
def pad_for_outpaint(
    image: Annotated[Image, Field(description="Images to extend")],
    left: Annotated[Pixels, Field(description="Pixels added on the left")] = 0,
    top: Annotated[Pixels, Field(description="Pixels added on top")] = 0,
    right: Annotated[Pixels, Field(description="Pixels added on the right")] = 0,
    bottom: Annotated[Pixels, Field(description="Pixels added at the bottom")] = 0,
    feathering: Annotated[Pixels, Field(
        description="Width of the soft band inside the original image along the padded sides")] = 40,
) -> Outpaint:
    """Extend images with mid-grey for outpainting, with ComfyUI's feathered mask (ImagePadForOutpaint).

    The mask is 1 on the new area; inside the original image, a pixel nearer than `feathering` to a
    padded side gets ((feathering - d) / feathering)^2 (d = its distance to the nearest padded side),
    and the band is left out when the image is not wider and taller than twice the feathering."""
    import torch

    b, ch, h, w = image.pixels.shape
    out = torch.full((b, ch, h + top + bottom, w + left + right), 0.5, dtype=torch.float32)
    out[:, :, top:top + h, left:left + w] = image.pixels
    mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
    inner = torch.zeros((h, w), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        rows = torch.arange(h)[:, None].expand(h, w)
        cols = torch.arange(w)[None, :].expand(h, w)
        far_h, far_w = torch.full((h, w), h), torch.full((h, w), w)
        dist = torch.stack([rows if top else far_h, (h - rows) if bottom else far_h,
                            cols if left else far_w, (w - cols) if right else far_w]).amin(dim=0)
        near = dist < feathering
        v = (feathering - dist[near]).double() / feathering  # ComfyUI computes in Python floats
        inner[near] = (v * v).to(torch.float32)
    mask[top:top + h, left:left + w] = inner
    return Outpaint(Image(out.contiguous()), Mask(mask[None, None].expand(b, 1, -1, -1).contiguous()))


@node("core.composite_masked", version="1.0.0")
def composite_masked(
    destination: Annotated[Image, Field(description="Images pasted onto")],
    source: Annotated[Image, Field(description="Images pasted")],
    x: Annotated[Pixels, Field(description="Left edge of the paste in the destination")] = 0,
    y: Annotated[Pixels, Field(description="Top edge of the paste in the destination")] = 0,
    resize_source: Annotated[bool, Field(description="Resize the source to the destination first")] = False,
    mask: Annotated[Mask | None, Field(description="Where the source shows (1) over the destination "
                                                   "(resized to the source); unset = everywhere")] = None,
) -> Image:
    """Paste `source` onto `destination` at (x, y) through a mask, as ComfyUI's ImageCompositeMasked.

    Bilinear resizes (torch, no antialiasing) bring the source to the destination size when asked and
    the mask to the source size; the part of the source past the destination's edges is cut off."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    dest = destination.pixels.clone()
    src = source.pixels
    if resize_source:
        src = F.interpolate(src, size=tuple(dest.shape[-2:]), mode="bilinear")
    src = _repeat_to(src, dest.shape[0])
    left, top = min(x, dest.shape[-1]), min(y, dest.shape[-2])
    if mask is None:
        weight = torch.ones_like(src)
    else:
        weight = F.interpolate(mask.pixels.reshape(-1, 1, *mask.pixels.shape[-2:]).float(),
                               size=tuple(src.shape[-2:]), mode="bilinear")
        weight = _repeat_to(weight, src.shape[0])
    vis_w, vis_h = dest.shape[-1] - left, dest.shape[-2] - top
    weight = weight[:, :, :vis_h, :vis_w]
    right, bottom = left + weight.shape[-1], top + weight.shape[-2]
    pasted = weight * src[:, :, :vis_h, :vis_w]
    dest[:, :, top:bottom, left:right] = pasted + (1 - weight) * dest[:, :, top:bottom, left:right]
    return Image(dest)


def _repeat_to(t: object, batch: int) -> object:
    """ComfyUI's repeat_to_batch_size: cut a longer batch, tile a shorter one."""
    import math

    n = int(t.shape[0])  # type: ignore[attr-defined]
    if n > batch:
        return t[:batch]  # type: ignore[index]
    if n < batch:
        return t.repeat(math.ceil(batch / n), *([1] * (t.dim() - 1)))[:batch]  # type: ignore[attr-defined]
    return t


@node("core.invert_image", version="1.0.0")
def invert_image(image: Annotated[Image, Field(description="Images to invert")]) -> Image:
    """1 - pixels: a negative of each image (ComfyUI's ImageInvert)."""
    return Image(1.0 - image.pixels)
