"""Image nodes: load, save, resize, crop, pad, batch, masks. Pixels are float32 (B, C, H, W) in [0, 1]."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import Field

from nodegraph.api import InputError, InputFile, NodeContext, OutputFile, node
from nodegraph_core.types import Image, Mask

if TYPE_CHECKING:  # a catalogue module: numpy, torch and PIL are imported inside the functions
    import numpy as np
    import torch

DEFAULT_IMAGE_PATH = OutputFile("image.png")
_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


def _open(ctx: NodeContext, path: str, mode: str) -> np.ndarray:
    import numpy as np
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    full = ctx.input_path(path)
    if full.is_dir():
        raise InputError(f"'{full}' is a folder, not an image file", field="path")
    if not full.is_file():
        raise InputError(f"image file '{full}' does not exist", field="path")
    try:
        with PILImage.open(full) as im:
            if mode == "A":
                if "A" not in im.getbands():
                    raise InputError(f"image '{full}' has no alpha channel to use as a mask", field="path")
                return np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
            return np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image '{full}': {exc}", field="path") from exc


@node("core.load_image", version="1.0.0")
def load_image(
    ctx: NodeContext,
    path: Annotated[InputFile, Field(description="Image file (PNG, JPEG, ...), relative to the graph file")],
) -> Image:
    """Load an image file as an RGB batch of one."""
    import torch

    pixels = torch.from_numpy(_open(ctx, path, "RGB")).permute(2, 0, 1).unsqueeze(0).contiguous()
    return Image(pixels)


# 1.1: red/green/blue channels (ComfyUI's LoadImageMask)
@node("core.load_mask", version="1.1.0")
def load_mask(
    ctx: NodeContext,
    path: Annotated[InputFile, Field(description="Mask image, relative to the graph file; white = repaint")],
    channel: Annotated[Literal["luminance", "alpha", "red", "green", "blue"],
                       Field(description="Use the grey level, the alpha channel or one colour channel")]
    = "luminance",
) -> Mask:
    """Load a mask (B=1, 1 channel) from an image's grey level, alpha or one colour channel."""
    import torch

    if channel in ("red", "green", "blue"):
        rgb = _open(ctx, path, "RGBA")  # ComfyUI's LoadImageMask reads the channel of the RGBA image
        plane = rgb[..., ("red", "green", "blue").index(channel)]
    else:
        plane = _open(ctx, path, "L" if channel == "luminance" else "A")
    return Mask(torch.from_numpy(plane.copy())[None, None].contiguous())


def _png_paths(path: str, batch: int, labels: tuple[str, ...] = ()) -> list[str]:
    if "{label}" in path:  # the images' own names (e.g. heat maps by word); the index where there are none
        names = labels if len(labels) == batch else tuple(str(i) for i in range(batch))
        # file-safe: no "/", no ".."
        safe = [re.sub(r"[^\w\-]+", "_", name).strip("_") or str(i) for i, name in enumerate(names)]
        return [path.replace("{label}", name).replace("{index}", str(i)) for i, name in enumerate(safe)]
    if "{index}" in path:
        return [path.replace("{index}", str(i)) for i in range(batch)]
    if batch == 1:
        return [path]
    stem, dot, suffix = path.rpartition(".")
    if not dot or "/" in suffix:
        return [f"{path}_{i}" for i in range(batch)]
    return [f"{stem}_{i}.{suffix}" for i in range(batch)]


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8, rounding exactly like diffusers' numpy_to_pil."""
    import numpy as np

    images = pixels.detach().cpu().float().permute(0, 2, 3, 1).numpy()
    images = np.clip(images, 0.0, 1.0)
    return (images * 255).round().astype("uint8")


@node("core.save_image", version="1.0.0", side_effects=True)
def save_image(
    ctx: NodeContext,
    image: Annotated[Image, Field(description="Images to save")],
    path: Annotated[OutputFile, Field(
        description="PNG path inside the output folder; '{index}' is replaced by the batch index, "
                    "'{label}' by the image's label (e.g. the word of an attention heat map) "
                    "(without it, a batch gets _0, _1, ... before the extension)")] = DEFAULT_IMAGE_PATH,
) -> list[str]:
    """Save images as PNG, with the resolved graph embedded so `nodegraph run image.png` re-runs it."""
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("nodegraph", json.dumps(ctx.metadata, default=str))
    arrays = to_uint8(image.pixels)
    names = _png_paths(str(path), len(arrays), tuple(image.labels))
    for array, name in zip(arrays, names, strict=True):
        target = ctx.output_path(name)
        try:
            # "x": a new file only, so a link planted at the staged name is refused, not followed
            with open(target, "xb") as file:
                PILImage.fromarray(array).save(file, format="PNG", pnginfo=info)
        except OSError as exc:  # a full disk, a read-only folder: the run writes nothing
            raise InputError(f"cannot write '{name}': {exc.strerror or exc}", field="path") from exc
    return names


def _resize_plane(plane: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    import numpy as np
    from PIL import Image as PILImage

    im = PILImage.fromarray(plane)  # float32 -> mode "F"
    return np.asarray(im.resize((width, height), resample=_RESAMPLE[method]), dtype=np.float32)


@node("core.resize", version="1.0.0")
def resize(
    image: Annotated[Image, Field(description="Images to resize")],
    width: Annotated[int, Field(ge=1, le=16384, description="New width in pixels")],
    height: Annotated[int, Field(ge=1, le=16384, description="New height in pixels")],
    method: Annotated[Literal["nearest", "bilinear", "bicubic", "lanczos"],
                      Field(description="Resampling filter (PIL's, on float pixels)")] = "bicubic",
) -> Image:
    """Resize images to an exact width and height."""
    import numpy as np
    import torch

    src = image.pixels.detach().cpu().float().numpy()
    out = np.stack([np.stack([_resize_plane(np.ascontiguousarray(ch), width, height, method) for ch in img])
                    for img in src])
    return Image(torch.from_numpy(np.clip(out, 0.0, 1.0)))


@node("core.crop", version="1.0.0")
def crop(
    image: Annotated[Image, Field(description="Images to crop")],
    x: Annotated[int, Field(ge=0, description="Left edge of the crop, in pixels")],
    y: Annotated[int, Field(ge=0, description="Top edge of the crop, in pixels")],
    width: Annotated[int, Field(ge=1, description="Width of the crop")],
    height: Annotated[int, Field(ge=1, description="Height of the crop")],
) -> Image:
    """Cut a rectangle out of images."""
    w, h = image.size
    if x + width > w or y + height > h:
        raise InputError(f"crop {width}x{height} at ({x}, {y}) leaves the {w}x{h} image", field="width")
    return Image(image.pixels[:, :, y:y + height, x:x + width].contiguous())


class Padded(NamedTuple):
    image: Image
    mask: Mask


@node("core.pad", version="1.0.0")
def pad(
    image: Annotated[Image, Field(description="Images to extend")],
    left: Annotated[int, Field(ge=0, le=8192, description="Pixels added on the left")] = 0,
    top: Annotated[int, Field(ge=0, le=8192, description="Pixels added on top")] = 0,
    right: Annotated[int, Field(ge=0, le=8192, description="Pixels added on the right")] = 0,
    bottom: Annotated[int, Field(ge=0, le=8192, description="Pixels added at the bottom")] = 0,
    fill: Annotated[Literal["edge", "black", "white", "gray"],
                    Field(description="What the new area shows before outpainting")] = "edge",
) -> Padded:
    """Extend images for outpainting; the mask is 1 on the new area (repaint) and 0 on the original."""
    import torch

    pixels = image.pixels
    amounts = (left, right, top, bottom)
    if fill == "edge":
        padded = torch.nn.functional.pad(pixels, amounts, mode="replicate")
    else:
        value = {"black": 0.0, "white": 1.0, "gray": 0.5}[fill]
        padded = torch.nn.functional.pad(pixels, amounts, mode="constant", value=value)
    b, _, h, w = pixels.shape
    mask = torch.nn.functional.pad(torch.zeros(b, 1, h, w, dtype=pixels.dtype), amounts, value=1.0)
    return Padded(Image(padded.contiguous()), Mask(mask))


@node("core.image_batch", version="1.0.0")
def image_batch(
    images: Annotated[list[Image], Field(description="Image batches of one size, joined in order")],
) -> Image:
    """Concatenate image batches into one batch."""
    import torch

    if not images:
        raise InputError("no images to join", field="images")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise InputError(f"images differ in size {sorted(sizes)}; resize them first", field="images")
    return Image(torch.cat([im.pixels for im in images], dim=0))


@node("core.invert_mask", version="1.0.0")
def invert_mask(mask: Annotated[Mask, Field(description="Mask to invert")]) -> Mask:
    """Swap the repainted and kept areas of a mask."""
    return Mask(1.0 - mask.pixels)
