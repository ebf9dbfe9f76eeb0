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


def _options(tmp_path: Path, name: str = "out") -> RunOptions:
    return RunOptions(out_dir=tmp_path / name, device="cpu", dtype="float32", show_progress=False)


def test_attention_maps_graph_writes_one_heat_map_per_word(tmp_path: Path) -> None:
    engine = Engine()
    result = engine.run(GRAPHS / "attention_maps.yaml", {"steps": 4}, options=_options(tmp_path))
    words = "a painting of a squirrel eating a burger".split(" ")
    maps = result.outputs["heatmaps"]["out"].pixels
    assert maps.shape == (len(words), 3, 64, 64)
    assert (tmp_path / "out" / "attention_maps" / "image.png").is_file()
    assert len(list((tmp_path / "out" / "attention_maps").glob("word_*.png"))) == len(words)
    squirrel, burger = words.index("squirrel"), words.index("burger")
    assert (maps[squirrel] - maps[burger]).abs().max() > 0.1  # words attend to different regions
    assert torch.equal(maps[0], maps[3])  # "a" is one word wherever it stands


def test_maps_come_from_the_cache_with_the_sampler_output(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = Engine(cache_dir=cache).run(GRAPHS / "attention_maps.yaml", {"steps": 4}, options=_options(tmp_path))
    # a new engine (empty memory tier) with the same disk cache, asking for other words:
    again = Engine(cache_dir=cache).run(GRAPHS / "attention_maps.yaml", {"steps": 4, "words": ["burger"]},
                                        options=_options(tmp_path, "again"))
    assert "latents" in again.cached and "heatmaps" in again.executed
    words = "a painting of a squirrel eating a burger".split(" ")
    assert torch.equal(again.outputs["heatmaps"]["out"].pixels[0],
                       first.outputs["heatmaps"]["out"].pixels[words.index("burger")])


def _p2p(tmp_path: Path, name: str, **overrides: Any) -> Any:
    result = Engine().run(GRAPHS / "prompt_to_prompt.yaml", {"steps": 4, **overrides},
                          options=_options(tmp_path, name))
    return result.outputs["image"]["out"].pixels


def test_prompt_to_prompt_graph_edits_only_when_the_prompt_differs(tmp_path: Path) -> None:
    edit = _p2p(tmp_path, "swap")
    assert edit.shape == (2, 3, 64, 64)
    assert (tmp_path / "swap" / "prompt_to_prompt" / "edit_1.png").is_file()
    assert not torch.equal(edit[0], edit[1])
    same = _p2p(tmp_path, "same", edited="a painting of a squirrel eating a burger")
    assert torch.equal(same[0], same[1])  # identity edit: the source image, exactly
    assert torch.equal(same[0], edit[0])  # the source branch never changes
    refined = _p2p(tmp_path, "refine", mode="refine", edited="a neoclassical painting of a squirrel eating a burger",
                   local_blend=["squirrel"])
    assert torch.equal(refined[0], edit[0]) and not torch.equal(refined[1], refined[0])


def test_word_swap_with_a_different_word_count_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NodegraphError, match="same number of words"):
        _p2p(tmp_path, "bad", edited="a painting of a lion eating a big burger")
    assert not (tmp_path / "bad").exists()
