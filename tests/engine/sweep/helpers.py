"""Shared pieces of the sweep tests: the tiny txt2img graph, a few steps, and ways to read results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
GRAPH = ROOT / "graphs" / "txt2img.yaml"
FIXED = {"steps": "2"}  # builtin:tinyworld, 64x64: a variant takes a fraction of a second


def manifest(out: Path) -> list[dict[str, Any]]:
    """The manifest's entries, in file order."""
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def images_by_params(out: Path) -> dict[tuple[tuple[str, str], ...], np.ndarray]:
    """Each finished variant's image, keyed by its swept values."""
    return {tuple(sorted(e["params"].items())): pixels(out / e["outputs"][0]["path"]) for e in manifest(out)}
