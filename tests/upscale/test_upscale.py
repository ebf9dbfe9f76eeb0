"""The upscale pack: an ESRGAN file loaded by spandrel, applied tile by tile like ComfyUI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import Engine, RunOptions
from nodegraph.errors import NodegraphError
from tests.spandrel_helper import save_tiny_esrgan, spandrel, tiny_esrgan

GRAPH = """\
version: 1
params:
  model: {type: str, default: tiny_x4.safetensors}
  tile: {type: int, default: 512}
  overlap: {type: int, default: 32}
nodes:
  image: {type: core.load_image, path: in.png}
  model: {type: upscale.load_model, path: $model}
  up:    {type: upscale.apply, model: "@model", image: "@image", tile: $tile, overlap: $overlap}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image as PILImage

    spandrel()
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "g.yaml").write_text(GRAPH)
    save_tiny_esrgan(tmp_path / "models" / "upscale_models" / "tiny_x4.safetensors")
    return tmp_path


def _run(work: Path, allow_pickle: bool = False, **sets: Any) -> Any:
    result = Engine().run(work / "g.yaml", {k: str(v) for k, v in sets.items()},
                          options=RunOptions(out_dir=work / "out", device="cpu", dtype="float32",
                                             model_dirs=(work / "models",), allow_pickle=allow_pickle))
    return result.outputs


def test_output_equals_spandrels_model_called_directly(work: Path) -> None:
    outputs = _run(work)
    image, up = outputs["image"]["out"].pixels, outputs["up"]["out"].pixels
    with torch.no_grad():
        direct = tiny_esrgan()(image).clamp(0, 1)  # the same weights, spandrel's class, no tiling
    assert up.shape == (1, 3, 80, 112)
    assert (up - direct).abs().max().item() == 0.0
    assert (up - torch.nn.functional.interpolate(image, scale_factor=4)).abs().max().item() > 0.05


def test_tiles_blend_close_to_the_whole_image(work: Path) -> None:
    whole = _run(work)["up"]["out"].pixels
    tiled = _run(work, tile=16, overlap=4)["up"]["out"].pixels  # 2 x 2 tiles over 20 x 28
    diff = (tiled - whole).abs()
    # tiles see less context at their borders, blended by the ramps: measured 0.0036 max, 0.00012 mean
    assert 0 < diff.max().item() < 0.02 and diff.mean().item() < 1e-3


def test_pickled_models_need_allow_pickle(work: Path) -> None:
    save_tiny_esrgan(work / "models" / "upscale_models" / "tiny_x4.pth")
    with pytest.raises(NodegraphError, match="allow-pickle"):
        _run(work, model="tiny_x4.pth")
    pickled = _run(work, allow_pickle=True, model="tiny_x4.pth")["up"]["out"].pixels
    assert torch.equal(pickled, _run(work)["up"]["out"].pixels)


def test_a_missing_or_foreign_file_is_an_input_error(work: Path) -> None:
    with pytest.raises(NodegraphError, match="upscale_models"):
        _run(work, model="nothere.safetensors")
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2, 2)}, str(work / "models" / "upscale_models" / "odd.safetensors"))
    with pytest.raises(NodegraphError, match="spandrel"):
        _run(work, model="odd.safetensors")
