"""Core image nodes and the PNG round trip (`nodegraph run image.png` reproduces the pixels)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nodegraph_core.image_nodes import to_uint8
from nodegraph_core.types import Image, Mask
from PIL import Image as PILImage
from typer.testing import CliRunner

from nodegraph import Engine, RunOptions
from nodegraph.cli.app import app
from nodegraph.errors import GraphError, NodeFailed
from nodegraph.nodes.registry import PackSource, Registry, build_registry


def core_registry() -> Registry:
    return build_registry([PackSource("core", "0.1.0", "nodegraph_core",
                                      lambda: importlib.import_module("nodegraph_core"))])


def _png(path: Path, size: tuple[int, int] = (12, 8), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    PILImage.fromarray(data[..., 0] if channels == 1 else data, mode=None).save(path)
    return path


GRAPH = """\
version: 1
description: load, resize, save
params:
  width: {type: int, default: 6}
nodes:
  src:   {type: core.load_image, path: in.png}
  small: {type: core.resize, image: "@src", width: $width, height: 4, method: lanczos}
  save:  {type: core.save_image, image: "@small", path: result.png}
"""


def test_png_round_trip_reproduces_pixels(tmp_path: Path) -> None:
    _png(tmp_path / "in.png")
    (tmp_path / "g.yaml").write_text(GRAPH)
    runner = CliRunner()
    registry = core_registry()
    first = runner.invoke(app, ["run", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "o1"),
                                "--set", "width=5", "--quiet"], obj={"registry": registry})
    assert first.exit_code == 0, first.output
    assert f"wrote {tmp_path / 'o1' / 'result.png'}" in first.output
    with PILImage.open(tmp_path / "o1" / "result.png") as im:
        meta = json.loads(im.text["nodegraph"])
        pixels1 = np.asarray(im.convert("RGB"))
    assert pixels1.shape == (4, 5, 3)
    assert meta["params"] == {"width": 5}
    assert meta["versions"]["packs"] == {"core": "0.1.0"} and meta["versions"]["torch"]
    # the embedded input path is absolute, so the PNG runs from anywhere
    assert meta["graph"]["nodes"]["src"]["path"] == str((tmp_path / "in.png").resolve())

    second = runner.invoke(app, ["run", str(tmp_path / "o1" / "result.png"), "--out", str(tmp_path / "o2"),
                                 "--quiet"], obj={"registry": registry})
    assert second.exit_code == 0, second.output
    with PILImage.open(tmp_path / "o2" / "result.png") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels1)


def test_png_without_graph_is_a_user_error(tmp_path: Path) -> None:
    _png(tmp_path / "plain.png")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "plain.png")], obj={"registry": core_registry()})
    assert result.exit_code == 2 and "carries no nodegraph graph" in result.output


def test_uint8_conversion_matches_diffusers() -> None:
    from diffusers.image_processor import VaeImageProcessor

    pixels = torch.rand(2, 3, 5, 7)
    pixels[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5 / 255])
    ours = to_uint8(pixels)
    theirs = VaeImageProcessor.numpy_to_pil(pixels.permute(0, 2, 3, 1).numpy())
    for a, b in zip(ours, theirs, strict=True):
        assert np.array_equal(a, np.asarray(b))


def _run(registry: Registry, nodes: dict, tmp_path: Path, base: Path) -> dict:
    engine = Engine(registry)
    plan = engine.load({"version": 1, "nodes": nodes}, file=base / "g.yaml")
    return engine.run(plan, options=RunOptions(out_dir=tmp_path / "out")).outputs


def test_load_image_errors_name_the_path(tmp_path: Path) -> None:
    registry = core_registry()
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    for name, words in (("missing.png", "does not exist"), ("corrupt.png", "cannot read image")):
        with pytest.raises(NodeFailed) as info:
            _run(registry, {"src": {"type": "core.load_image", "path": name}}, tmp_path, tmp_path)
        problem = info.value.problem
        assert problem.field == "path" and problem.node == "src"
        assert words in problem.message and str(tmp_path / name) in problem.message


def test_image_nodes_shapes_and_values(tmp_path: Path) -> None:
    registry = core_registry()
    _png(tmp_path / "a.png", (10, 6))
    _png(tmp_path / "m.png", (10, 6), "RGBA")
    out = _run(registry, {
        "a": {"type": "core.load_image", "path": "a.png"},
        "crop": {"type": "core.crop", "image": "@a", "x": 2, "y": 1, "width": 4, "height": 3},
        "pad": {"type": "core.pad", "image": "@crop", "left": 1, "right": 2, "top": 0, "bottom": 1,
                "fill": "black"},
        "big": {"type": "core.resize", "image": "@crop", "width": 7, "height": 4, "method": "nearest"},
        "both": {"type": "core.image_batch", "images": ["@big", "@pad.image"]},
        "m": {"type": "core.load_mask", "path": "m.png", "channel": "alpha"},
        "inv": {"type": "core.invert_mask", "mask": "@m"},
    }, tmp_path, tmp_path)
    a = out["a"]["out"].pixels
    assert a.shape == (1, 3, 6, 10) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    crop = out["crop"]["out"].pixels
    assert torch.equal(crop, a[:, :, 1:4, 2:6])
    padded, mask = out["pad"]["image"].pixels, out["pad"]["mask"].pixels
    assert padded.shape == (1, 3, 4, 7) and mask.shape == (1, 1, 4, 7)
    assert torch.equal(padded[:, :, 0:3, 1:5], crop) and float(padded[0, :, 3, 0].sum()) == 0.0
    assert float(mask.sum()) == 4 * 7 - 3 * 4 and float(mask[0, 0, 0:3, 1:5].sum()) == 0.0
    assert out["both"]["out"].pixels.shape == (2, 3, 4, 7)
    m = out["m"]["out"].pixels
    assert isinstance(out["m"]["out"], Mask) and m.shape == (1, 1, 6, 10)
    assert torch.allclose(out["inv"]["out"].pixels, 1 - m)


def test_crop_outside_and_batch_size_mismatch_are_input_errors(tmp_path: Path) -> None:
    registry = core_registry()
    _png(tmp_path / "a.png", (10, 6))
    with pytest.raises(NodeFailed, match="leaves the 10x6 image"):
        _run(registry, {"a": {"type": "core.load_image", "path": "a.png"},
                        "c": {"type": "core.crop", "image": "@a", "x": 8, "y": 0, "width": 4, "height": 2}},
             tmp_path, tmp_path)
    with pytest.raises(NodeFailed, match="differ in size"):
        _run(registry, {"a": {"type": "core.load_image", "path": "a.png"},
                        "r": {"type": "core.resize", "image": "@a", "width": 3, "height": 3},
                        "b": {"type": "core.image_batch", "images": ["@a", "@r"]}}, tmp_path, tmp_path)


def test_save_image_batch_names(tmp_path: Path) -> None:
    from nodegraph_core.image_nodes import save_image

    from nodegraph.runtime.context import RunContext
    from nodegraph.runtime.residency import ResidencyManager

    run = RunContext(RunOptions(out_dir=tmp_path / "o"), ResidencyManager(), tmp_path / "stage")
    ctx = run.for_node("s", "core.save_image")
    image = Image(torch.rand(2, 3, 4, 4))
    assert save_image(ctx, image, "x.png") == ["x_0.png", "x_1.png"]
    assert save_image(ctx, image, "y{index}.png") == ["y0.png", "y1.png"]
    assert save_image(ctx, Image(torch.rand(1, 3, 4, 4)), "z.png") == ["z.png"]
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["x_0.png", "x_1.png", "y0.png",
                                                                      "y1.png", "z.png"]


def test_unknown_graph_dict_problem_is_graph_error(tmp_path: Path) -> None:
    with pytest.raises(GraphError):
        Engine(core_registry()).load({"version": 1, "nodes": {"a": {"type": "core.nope"}}})
