"""The cache: keys, the byte-bounded memory tier, the safe disk tier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from nodegraph_core.types import Image
from nodegraph_diffusion.types import LoraPatch, ModelSource, UNetHandle
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.api import InputFile
from nodegraph.runtime.cache import Cache, MemoryCache, canonical_json, estimate_bytes
from nodegraph.runtime.diskcache import DiskCache
from nodegraph.testing import CallCounter, toy_registry
from tests.engine.runtime.conftest import make_plan


@dataclass(frozen=True)
class Holder:
    """A module-level dataclass (importable by module + qualname) holding a tensor and a handle."""

    tensor: torch.Tensor
    handle: UNetHandle
    note: str = ""


def test_canonical_json_treats_str_subclasses_and_paths_as_text() -> None:
    assert canonical_json({"b": InputFile("x.png"), "a": Path("y")}) == '{"a":"y","b":"x.png"}'
    assert canonical_json({"t": (1, 2.5)}) == '{"t":[1,2.5]}'


def test_estimate_bytes_counts_tensors_arrays_images_recursively() -> None:
    t = torch.zeros(10, 10, dtype=torch.float32)
    assert estimate_bytes(t) == 400
    assert estimate_bytes(np.zeros((5, 5), dtype=np.float64)) == 200
    assert estimate_bytes(PILImage.new("RGB", (10, 10))) == 300
    nested = {"img": Image(t), "list": [t, (t,)]}
    assert 1200 <= estimate_bytes(nested) < 1200 + 1000


def test_memory_lru_is_bounded_by_bytes_and_evicts_least_recent() -> None:
    cache = MemoryCache(max_bytes=1200)
    for name in "abc":
        cache.put(name, {"out": torch.zeros(75)})  # 300 bytes each + 64 for the dict: 364
    assert len(cache) == 3
    cache.get("a")  # a is now most recent; b is the oldest
    cache.put("d", {"out": torch.zeros(75)})
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.bytes_used == 3 * 364 and cache.evictions == 1
    assert not cache.put("huge", {"out": torch.zeros(1000)})  # larger than the whole budget
    assert "huge" not in cache and len(cache) == 3


def test_engine_memory_budget_evicts_and_recomputes(tmp_path: Path) -> None:
    counter = CallCounter()
    engine = Engine(toy_registry(counter), cache_mb=0)  # nothing fits: every run recomputes
    plan = make_plan(engine.registry, {"a": {"type": "toy.number", "value": 1.0}})
    engine.run(plan, options=RunOptions(out_dir=tmp_path))
    second = engine.run(plan, options=RunOptions(out_dir=tmp_path))
    assert second.executed == ["a"] and counter.calls["toy.number"] == 2


def test_disk_round_trip_of_tensors_dataclasses_images_and_text(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c")
    source = ModelSource("/m", "fp", "diffusers")
    handle = UNetHandle(source, (LoraPatch("/l", "f2", "l", 0.5, 0.25),))
    value = {
        "out": Holder(torch.arange(6, dtype=torch.float16).reshape(2, 3), handle, "n"),
        "img": Image(torch.rand(1, 3, 4, 5)),
        "pil": PILImage.new("RGB", (3, 2), (10, 20, 30)),
        "misc": [1, 2.5, None, True, "s", InputFile("a.png"), (1, "x"), {"k": (2, 3)}, np.arange(3)],
    }
    assert disk.put("ab" * 32, value)
    back = disk.get("ab" * 32)
    assert back is not None
    assert isinstance(back["out"], Holder) and back["out"].handle == handle
    assert torch.equal(back["out"].tensor, value["out"].tensor) and back["out"].tensor.dtype == torch.float16
    assert torch.equal(back["img"].pixels, value["img"].pixels)
    assert back["pil"].getpixel((1, 1)) == (10, 20, 30)
    misc = back["misc"]
    assert misc[:5] == [1, 2.5, None, True, "s"]
    assert type(misc[5]) is InputFile and misc[6] == (1, "x") and misc[7] == {"k": (2, 3)}
    assert np.array_equal(misc[8], np.arange(3))


def test_disk_tier_skips_what_it_cannot_serialise_safely(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c")
    assert not disk.put("cd" * 32, {"out": torch.nn.Linear(2, 2)})
    assert not disk.put("ef" * 32, {"out": object()})
    assert disk.get("cd" * 32) is None and not list((tmp_path / "c").rglob("value.json"))
    assert not list((tmp_path / "c").rglob("*.pkl"))


def test_disk_tier_shared_by_two_engines(tmp_path: Path) -> None:
    counter = CallCounter()
    nodes = {"a": {"type": "toy.number", "value": 2.0}, "s": {"type": "toy.split", "x": "@a"},
             "t": {"type": "toy.format", "value": "@s.high"}}
    first = Engine(toy_registry(counter), cache_dir=tmp_path / "cache")
    first.run(make_plan(first.registry, nodes), options=RunOptions(out_dir=tmp_path / "o"))
    assert sum(counter.calls.values()) == 3
    second = Engine(toy_registry(counter), cache_dir=tmp_path / "cache")
    result = second.run(make_plan(second.registry, nodes), options=RunOptions(out_dir=tmp_path / "o"))
    assert result.executed == [] and result.cached == ["a", "s", "t"]
    assert result.outputs["s"] == {"low": 1.0, "high": 3.0} and result.outputs["t"]["out"] == "3.0"
    assert sum(counter.calls.values()) == 3 and second.cache.stats.disk_hits == 3


def test_file_fingerprint_joins_the_key(tmp_path: Path) -> None:
    """Editing a file a node reads re-runs the node even though its literal (the path) is unchanged."""
    from nodegraph.document.plan import PlannedNode
    from nodegraph.runtime.cache import node_key

    registry = toy_registry()
    spec = Engine(registry).registry.get("toy.number")
    assert spec is not None
    (tmp_path / "f.txt").write_text("one")
    # a fake input typed InputFile: reuse a real spec, swapping the port type of `value`
    from dataclasses import replace

    inputs = dict(spec.inputs)
    inputs["value"] = replace(inputs["value"], port_type=InputFile)
    fake = replace(spec, inputs=inputs)
    node = PlannedNode("n", fake, {"value": "f.txt"}, {})
    k1 = node_key(node, {}, tmp_path, "run1")
    assert node_key(node, {}, tmp_path, "run2") == k1  # cacheable: nonce ignored
    (tmp_path / "f.txt").write_text("two")
    assert node_key(node, {}, tmp_path, "run1") != k1


@pytest.mark.parametrize("mb", [2048])
def test_cache_object_lives_in_engine(mb: int) -> None:
    a, b = Engine(toy_registry(), cache_mb=mb), Engine(toy_registry(), cache_mb=mb)
    assert isinstance(a.cache, Cache) and a.cache is not b.cache


def test_a_result_made_with_another_dtype_or_optimize_level_is_not_reused(tmp_path: Path) -> None:
    engine = Engine(toy_registry(CallCounter()))
    plan = make_plan(engine.registry, {"a": {"type": "toy.number", "value": 1.0},
                                       "s": {"type": "toy.scale", "x": "@a", "factor": 2.0}})
    out = tmp_path / "o"
    assert engine.run(plan, options=RunOptions(out_dir=out, dtype="float32")).executed == ["a", "s"]
    assert engine.run(plan, options=RunOptions(out_dir=out, dtype="float32")).executed == []
    assert engine.run(plan, options=RunOptions(out_dir=out, dtype="float16")).executed == ["a", "s"]
    again = engine.run(plan, options=RunOptions(out_dir=out, dtype="float16", optimize="basic"))
    assert again.executed == ["a", "s"]
