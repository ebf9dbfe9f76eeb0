"""Helpers of the multimodal tests: run graph dicts on the CPU in fp32, batch picture files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image as PILImage


def run_graph(nodes: dict[str, Any], out: Path, **options: Any) -> Any:
    from nodegraph import Engine, RunOptions

    opts = RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False, **options)
    return Engine().run({"version": 1, "nodes": nodes}, options=opts)


def batch_nodes(pictures: list[Path]) -> dict[str, Any]:
    """Nodes loading the pictures and batching them as `@batch`."""
    nodes: dict[str, Any] = {f"p{i}": {"type": "core.load_image", "path": str(p)}
                             for i, p in enumerate(pictures)}
    nodes["batch"] = {"type": "core.image_batch", "images": [f"@p{i}" for i in range(len(pictures))]}
    return nodes


def pil_images(pictures: list[Path]) -> list[Any]:
    """The pictures as the library's users read them."""
    return [PILImage.open(p).convert("RGB") for p in pictures]
