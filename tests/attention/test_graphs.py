"""The attention graphs run through the engine, offline on the tiny model, with sensible outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import Engine
from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import RunOptions

GRAPHS = Path(__file__).parents[2] / "graphs"
MAPS_PROMPT = "a big yellow circle on the left, blue background"  # graphs/attention_maps.yaml's default
SOURCE = "a big red circle on the left, blue background"  # graphs/prompt_to_prompt.yaml's default


def _options(tmp_path: Path, name: str = "out") -> RunOptions:
    return RunOptions(out_dir=tmp_path / name, device="cpu", dtype="float32", show_progress=False)


def test_attention_maps_graph_writes_one_heat_map_per_word(tmp_path: Path) -> None:
    engine = Engine()
    result = engine.run(GRAPHS / "attention_maps.yaml", {"steps": 4}, options=_options(tmp_path))
    words = MAPS_PROMPT.split(" ")
    maps = result.outputs["heatmaps"]["out"].pixels
    assert maps.shape == (len(words), 3, 64, 64)
    assert (tmp_path / "out" / "attention_maps" / "image.png").is_file()
    assert len(list((tmp_path / "out" / "attention_maps").glob("word_*.png"))) == len(words)
    assert (maps[words.index("circle")] - maps[words.index("big")]).abs().max() > 0.1  # different regions


def test_a_words_map_lies_on_what_it_names(tmp_path: Path) -> None:
    """With the trained demo model, "circle" attends to the circle: its heat map is hotter on the object."""
    result = Engine().run(GRAPHS / "attention_maps.yaml", {"steps": 8, "words": ["circle"]},
                          options=_options(tmp_path))
    image = result.outputs["image"]["out"].pixels[0]
    background = image[:, :2, :2].mean(dim=(1, 2))
    on_object = (image - background[:, None, None]).abs().sum(0) > 0.5
    assert 0.02 < on_object.float().mean() < 0.6  # an object on a flat background
    from transformers import CLIPTokenizer

    from nodegraph_attention.alignment import word_token_indices
    from nodegraph_attention.heatmaps import normalise, word_maps
    from nodegraph_diffusion.paths import BUILTIN_DIR

    maps = result.outputs["latents"]["out"].extras[result.outputs["capture"]["out"].key].maps[0]
    tokenizer = CLIPTokenizer.from_pretrained(BUILTIN_DIR / "tinyworld" / "tokenizer")
    def on_object_ratio(word: str) -> float:
        """How much hotter the word's map is on the object than off it."""
        groups = [word_token_indices(tokenizer, MAPS_PROMPT, word, maps.shape[0])]
        heat = normalise(word_maps(maps, groups))[0]
        heat = torch.nn.functional.interpolate(heat[None, None], size=on_object.shape, mode="nearest")[0, 0]
        return float(heat[on_object].mean() / heat[~on_object].mean())

    assert on_object_ratio("circle") > 1.3  # measured 4.4 with the shipped demo model (2.2 with the first)
    assert on_object_ratio("circle") > on_object_ratio("a") + 0.5  # "a": 0.2, mostly the background


def test_maps_come_from_the_cache_with_the_sampler_output(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = Engine(cache_dir=cache).run(GRAPHS / "attention_maps.yaml", {"steps": 4}, options=_options(tmp_path))
    # a new engine (empty memory tier) with the same disk cache, asking for other words:
    again = Engine(cache_dir=cache).run(GRAPHS / "attention_maps.yaml", {"steps": 4, "words": ["circle"]},
                                        options=_options(tmp_path, "again"))
    assert "latents" in again.cached and "heatmaps" in again.executed
    words = MAPS_PROMPT.split(" ")
    assert torch.equal(again.outputs["heatmaps"]["out"].pixels[0],
                       first.outputs["heatmaps"]["out"].pixels[words.index("circle")])


def _p2p(tmp_path: Path, name: str, **overrides: Any) -> Any:
    result = Engine().run(GRAPHS / "prompt_to_prompt.yaml", {"steps": 4, **overrides},
                          options=_options(tmp_path, name))
    return result.outputs["image"]["out"].pixels


def test_prompt_to_prompt_graph_edits_only_when_the_prompt_differs(tmp_path: Path) -> None:
    edit = _p2p(tmp_path, "swap")
    assert edit.shape == (2, 3, 64, 64)
    assert (tmp_path / "swap" / "prompt_to_prompt" / "edit_1.png").is_file()
    assert not torch.equal(edit[0], edit[1])
    same = _p2p(tmp_path, "same", edited=SOURCE)
    assert torch.equal(same[0], same[1])  # identity edit: the source image, exactly
    assert torch.equal(same[0], edit[0])  # the source branch never changes
    refined = _p2p(tmp_path, "refine", mode="refine", edited="a big red circle on the left, dark blue background",
                   local_blend=["circle"])
    assert torch.equal(refined[0], edit[0]) and not torch.equal(refined[1], refined[0])


def test_word_swap_with_a_different_word_count_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NodegraphError, match="same number of words"):
        _p2p(tmp_path, "bad", edited="a big red square on the left, big blue background")
    assert not (tmp_path / "bad").exists()
