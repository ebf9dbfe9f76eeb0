"""Heat-map files are named by their word (file-safe, unique on a repeat), not word_0 ... word_8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nodegraph_attention.labels import safe_label, word_labels
from PIL import Image as PILImage

from nodegraph import Engine
from nodegraph.runtime.context import RunOptions

GRAPHS = Path(__file__).parents[2] / "graphs"
MAPS_PROMPT = "a big yellow circle on the left, blue background"  # graphs/attention_maps.yaml's default


@pytest.mark.parametrize(("word", "label"), [("circle", "circle"), ("left,", "left"), ("../etc", "etc"),
                                             ("a/b", "a_b"), ("...", "word"), ("café", "café"), ("x", "x")])
def test_safe_label(word: str, label: str) -> None:
    assert safe_label(word) == label


def test_repeated_words_get_unique_labels() -> None:
    assert word_labels(["a", "red", "a", "a"]) == ("a", "red", "a_2", "a_3")
    assert word_labels(["a", "a", "a_2"]) == ("a", "a_3", "a_2")  # a made-up label never takes a real word's
    assert word_labels(["left,", "left."]) == ("left", "left_2")


def test_attention_maps_graph_names_each_file_by_its_word(tmp_path: Path) -> None:
    out = tmp_path / "out"
    words = ["circle", "left,", "big", "circle"]
    result = Engine().run(GRAPHS / "attention_maps.yaml", {"steps": 3, "words": words},
                          options=RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False))
    maps = result.outputs["heatmaps"]["out"]
    assert maps.labels == ("circle", "left", "big", "circle_2")
    files = sorted(p.name for p in (out / "attention_maps").glob("word_*.png"))
    assert files == ["word_big.png", "word_circle.png", "word_circle_2.png", "word_left.png"]
    for i, label in enumerate(maps.labels):
        with PILImage.open(out / "attention_maps" / f"word_{label}.png") as im:
            saved = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        assert (saved - maps.pixels[i]).abs().max() <= 0.5 / 255 + 1e-6, label


def test_save_image_label_placeholder_without_labels_uses_the_index(tmp_path: Path) -> None:
    from nodegraph_core.image_nodes import _png_paths

    assert _png_paths("m/{label}.png", 2) == ["m/0.png", "m/1.png"]
    assert _png_paths("m/{label}.png", 2, ("../up", "ok")) == ["m/up.png", "m/ok.png"]
