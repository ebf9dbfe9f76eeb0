"""A labelled grid of a batch (the best-of-n contact sheet): PIL draws the labels, torch lays out pixels."""

from __future__ import annotations

from typing import Any

from nodegraph.api import Image


def _label_strip(text: str, width: int, height: int) -> Any:
    """A (3, height, width) float tensor: white text on black, PIL's default bitmap font, wrapped."""
    import numpy as np
    import torch
    from PIL import Image as PILImage
    from PIL import ImageDraw

    strip = PILImage.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    lines = [""]
    for char in text:  # wrap at the cell's width: small cells (64 px) fit ~10 characters a line
        if lines[-1] and draw.textlength(lines[-1] + char) > width - 2:
            lines.append("")
        lines[-1] += char
    draw.multiline_text((1, 0), "\n".join(lines), fill=(255, 255, 255), spacing=1)
    return torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255.0).permute(2, 0, 1)


def grid(image: Image, columns: int, label_height: int) -> Image:
    """Images row by row, `columns` per row, each with its label (if any) in a strip underneath."""
    import torch

    batch, _, h, w = (int(d) for d in image.pixels.shape)
    cols = min(columns, batch)
    rows = (batch + cols - 1) // cols
    cell_h = h + (label_height if image.labels else 0)
    sheet = torch.zeros(3, rows * cell_h, cols * w)
    for i in range(batch):
        top, left = (i // cols) * cell_h, (i % cols) * w
        sheet[:, top:top + h, left:left + w] = image.pixels[i].float()
        if image.labels and label_height:
            sheet[:, top + h:top + cell_h, left:left + w] = _label_strip(image.labels[i], w, label_height)
    return Image(pixels=sheet.unsqueeze(0).contiguous())
