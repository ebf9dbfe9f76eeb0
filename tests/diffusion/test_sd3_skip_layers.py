"""Skip-layer guidance (nodegraph_diffusion/skip_layers.py) equals StableDiffusion3Pipeline's
`skip_guidance_layers` on the same seed, to the last bit on CPU fp32, on builtin:tinysd3 (2 blocks; the
tests skip block 1 or 0), and acts: its scale changes the picture. Other families' samplers and blocks
the transformer lacks are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"
SEED, STEPS, CFG = 5, 4, 4.5
SLG = '  slg:       {type: diffusion.skip_layer_guidance, layers: %s, scale: %s, start: %s, stop: %s}\n'


def slg_graph(tmp_path: Path, layers: list[int], scale: float, start: float, stop: float,
              base: str = "sd35.yaml") -> Path:
    """graphs/sd35.yaml with a diffusion.skip_layer_guidance node in the sampler's conditions."""
    text = (GRAPHS / base).read_text()
    for old, new in (("  latents:", SLG % (layers, scale, start, stop) + "  latents:"),
                     ("cfg: $cfg}", 'cfg: $cfg, conditions: ["@slg"]}')):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "slg.yaml"
    path.write_text(text)
    return path


def run(tmp_path: Path, graph: Path) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(graph, {"steps": STEPS, "seed": SEED, "cfg": CFG, "negative": "blurry"}, options)


def pipe_call(**kwargs: Any) -> Any:
    from tests.diffusion.test_sd3 import sd3_pipe

    kwargs = {"negative_prompt": "blurry", "height": 64, "width": 64, "num_inference_steps": STEPS,
              "guidance_scale": CFG, **kwargs}
    return sd3_pipe()(PROMPT, **kwargs, generator=torch.Generator().manual_seed(SEED)).images


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


# steps 1 and 2 of 4 lie inside (0.04, 2.4); (0.3, 1.0) takes steps 2 and 3
@pytest.mark.parametrize(("layers", "scale", "start", "stop"),
                         [([1], 2.8, 0.01, 0.6), ([0], 1.5, 0.3, 1.0), ([0, 1], 2.8, 0.01, 0.6)])
def test_skip_layer_guidance_equals_sd3_pipeline(tmp_path: Path, layers: list[int], scale: float,
                                                 start: float, stop: float) -> None:
    result = run(tmp_path, slg_graph(tmp_path, layers, scale, start, stop))
    kwargs = {"skip_guidance_layers": layers, "skip_layer_guidance_scale": scale,
              "skip_layer_guidance_start": start, "skip_layer_guidance_stop": stop}
    latents = pipe_call(**kwargs, output_type="latent")
    ours = result.outputs["latents"]["out"].samples
    assert (ours - latents).abs().max().item() == 0.0
    image = pipe_call(**kwargs)[0]
    assert np.array_equal(png(tmp_path / "sd35.png"), np.asarray(image))


def test_the_scale_changes_the_picture(tmp_path: Path) -> None:
    def latents(scale: float) -> torch.Tensor:
        folder = tmp_path / str(scale)
        folder.mkdir()
        return run(folder, slg_graph(folder, [1], scale, 0.01, 0.6)).outputs["latents"]["out"].samples

    plain = run(tmp_path, GRAPHS / "sd35.yaml").outputs["latents"]["out"].samples
    off, on = latents(0.0), latents(2.8)
    assert torch.equal(off, plain)  # scale 0 adds exact zeros
    assert (on - off).abs().max().item() > 1e-3  # measured: 0.017 (a random model)


def test_blocks_the_transformer_lacks_are_refused(tmp_path: Path) -> None:
    """Exit 2, the node and field named, no traceback, no picture."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    graph = slg_graph(tmp_path, [1, 7], 2.8, 0.01, 0.6)
    result = CliRunner().invoke(app, ["run", str(graph), "--out", str(tmp_path / "out"), "--no-cache", "-q",
                                      "--set", "steps=2"])
    assert result.exit_code == 2, result.output
    assert "node 'latents', field 'conditions'" in result.output, result.output
    assert "layers [7] are not blocks of this transformer (2 blocks: 0 to 1)" in result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "out").glob("*.png"))


def test_skip_layer_guidance_on_an_sd15_sampler_fails_validation(tmp_path: Path) -> None:
    from tests.diffusion.test_sd3_validation import refused

    text = slg_graph(tmp_path, [1], 2.8, 0.01, 0.6, base="txt2img.yaml").read_text()
    problem = refused(tmp_path, text)
    assert (problem.node, problem.field) == ("latents", "conditions")
    assert "SD3 control unit from node 'slg'" in str(problem)
