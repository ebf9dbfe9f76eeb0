"""Sweep axes: ranges, lists and value files; grid and zip expansion; errors that say what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodegraph.errors import NodegraphError
from nodegraph.sweep.spec import Axis, parse_axes, parse_axis
from nodegraph.sweep.variants import Variant, combinations


@pytest.mark.parametrize(("item", "values"), [
    ("seed=1..4", ("1", "2", "3", "4")),
    ("seed=4..1", ("4", "3", "2", "1")),
    ("w=0..1:0.25", ("0", "0.25", "0.5", "0.75", "1")),
    ("w=0..0.3:0.1", ("0", "0.1", "0.2", "0.3")),
    ("w=1..0:-0.5", ("1", "0.5", "0")),
    ("lora_weight=0,0.5,1", ("0", "0.5", "1")),
    ("sampler.steps=7", ("7",)),
    ("prompt=a cat, a dog", ("a cat", "a dog")),
])
def test_values(item: str, values: tuple[str, ...]) -> None:
    axis = parse_axis(item)
    assert axis.values == values
    assert axis.target == item.partition("=")[0]


def test_values_file_one_per_line_relative_to_base(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("a red circle\n\n  a blue square  \n")
    assert parse_axis("prompt=@prompts.txt", tmp_path).values == ("a red circle", "a blue square")


@pytest.mark.parametrize(("item", "needle"), [
    ("seed", "name=values"),
    ("=1,2", "name=values"),
    ("seed=", "at least one value"),
    ("seed=1,,2", "no empty"),
    ("seed=1..x", "'x' is not a number"),
    ("seed=1..5:0", "never reaches"),
    ("seed=5..1:1", "never reaches"),
    ("seed=1..1000000000", "at most"),
    ("prompt=@/nonexistent/prompts.txt", "cannot read"),
])
def test_bad_items_name_the_problem(item: str, needle: str) -> None:
    with pytest.raises(NodegraphError, match=needle):
        parse_axis(item)


def test_a_target_swept_twice_is_an_error() -> None:
    with pytest.raises(NodegraphError, match="'seed' is given twice"):
        parse_axes(["seed=1,2", "seed=3"])


def test_grid_is_every_combination_first_axis_outermost() -> None:
    axes = [Axis("seed", ("1", "2")), Axis("w", ("0", "1", "2"))]
    rows = combinations(axes, zipped=False)
    assert len(rows) == 6
    assert rows[:3] == [{"seed": "1", "w": "0"}, {"seed": "1", "w": "1"}, {"seed": "1", "w": "2"}]
    assert rows[3] == {"seed": "2", "w": "0"}


def test_zip_pairs_values_and_needs_equal_lengths() -> None:
    axes = [Axis("seed", ("1", "2")), Axis("w", ("0", "1"))]
    assert combinations(axes, zipped=True) == [{"seed": "1", "w": "0"}, {"seed": "2", "w": "1"}]
    with pytest.raises(NodegraphError, match="same number of values"):
        combinations([Axis("seed", ("1", "2")), Axis("w", ("0",))], zipped=True)


def test_variant_names_are_readable_safe_and_carry_the_key() -> None:
    variant = Variant(0, {"prompt": "a cat / on ../mat", "sampler.seed": "3"}, "ab" * 32)
    assert variant.name.endswith("-" + "ab" * 6)
    assert "/" not in variant.name and ".." not in variant.name
    assert variant.name.startswith("prompt-a_cat_on_mat_seed-3")
