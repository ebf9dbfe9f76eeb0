"""The contact sheet: every variant's first image in one labelled grid — what a person looks at first.

Grid sweeps put the first axis down the rows and the other axes across the columns, labelled on the
left and on top (`seed=3`, `lora_weight=0.5`). One-axis and zipped sweeps are a wrapped strip with
each cell captioned by its values. Small images are scaled up by a whole factor (nearest neighbour,
so pixels stay pixels) to keep labels legible.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nodegraph.sweep.spec import Axis
from nodegraph.sweep.variants import Variant

MIN_CELL = 128
PAD = 4
BACKGROUND = (255, 255, 255)
MISSING = (200, 200, 200)
TEXT = (0, 0, 0)


def first_image(entry: dict[str, Any] | None, out_dir: Path) -> Path | None:
    """The first PNG a finished variant wrote, if any."""
    for item in (entry or {}).get("outputs", []):
        path = out_dir / str(item.get("path", ""))
        if path.suffix.lower() == ".png" and path.is_file():
            return path
    return None


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def render_sheet(axes: Sequence[Axis], zipped: bool, variants: Sequence[Variant],
                 images: Sequence[Path | None]) -> bytes | None:
    """A PNG of the variants' images with the swept values on the axes; None when there is no image."""
    from PIL import Image, ImageDraw

    if not any(images):
        return None
    loaded = [Image.open(p).convert("RGB") if p is not None else None for p in images]
    w0 = max(im.width for im in loaded if im is not None)
    h0 = max(im.height for im in loaded if im is not None)
    scale = max(1, math.ceil(MIN_CELL / max(w0, 1)))
    cw, ch = w0 * scale, h0 * scale
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag=0.5", font)[1] + 4

    def cell(im: Any) -> Any:
        if im is None:
            return Image.new("RGB", (cw, ch), MISSING)
        return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)

    grid_mode = not zipped and len(axes) >= 2
    if grid_mode:
        rows = [f"{axes[0].target}={v}" for v in axes[0].values]
        cols = [", ".join(f"{a.target}={v}" for a, v in zip(axes[1:], combo, strict=True))
                for combo in itertools.product(*(a.values for a in axes[1:]))]
        left = max(_text_size(probe, r, font)[0] for r in rows) + 2 * PAD
        top = line_h + PAD
        n_rows, n_cols, caption = len(rows), len(cols), 0
    else:
        n_cols = min(len(variants), max(1, math.ceil(math.sqrt(len(variants)))) if len(variants) > 8 else
                     len(variants))
        n_rows = math.ceil(len(variants) / n_cols)
        lines = max(1, len(axes), *(len(v.overrides) for v in variants))  # a cell's caption: its values
        rows, cols, left, top, caption = [], [], PAD, PAD, line_h * lines
    sheet = Image.new("RGB", (left + n_cols * (cw + PAD), top + n_rows * (ch + caption + PAD)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(cols):
        draw.text((left + c * (cw + PAD), PAD // 2), _fit(draw, label, cw, font), fill=TEXT, font=font)
    for r, label in enumerate(rows):
        draw.text((PAD, top + r * (ch + PAD) + ch // 2 - line_h // 2), label, fill=TEXT, font=font)
    for i, (variant, im) in enumerate(zip(variants, loaded, strict=True)):
        r, c = divmod(i, n_cols)
        x, y = left + c * (cw + PAD), top + r * (ch + caption + PAD)
        sheet.paste(cell(im), (x, y))
        if caption:
            for k, (target, value) in enumerate(variant.overrides.items()):
                text = _fit(draw, f"{target}={value}", cw, font)
                draw.text((x, y + ch + 2 + k * line_h), text, fill=TEXT, font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(draw: Any, text: str, width: int, font: Any) -> str:
    """Shorten a label with an ellipsis until it fits the cell width."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while len(text) > 1 and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"
