"""Shared by the graph tests: CPU fp32 run options without bars, and a saved PNG's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from nodegraph import RunOptions


def cpu_options(out: Path) -> RunOptions:
    """Options for exactness tests: CPU, fp32 (the pipelines' reference setting), no progress bars."""
    return RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False)


def png_pixels(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))
