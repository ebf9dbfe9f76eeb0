"""SDXL base vs refiner at validation: same family, models that do not fit each other.

Both are the SDXL family, so the family check passes them; what differs is the width of the text
conditioning (base: both encoders, 2048; refiner: the second, 1280; tinyxl 64 / 32) and that the
refiner only refines (its UNet takes an aesthetic score instead of the target size: diffusers'
txt2img pipeline refuses it). Both are told from config files before any weights load, naming the
file and line, the nodes and the field, and the CLI exits 2 without writing outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodegraph.cli.app import app
from nodegraph.document.load import load_plan
from nodegraph.errors import GraphError
from nodegraph.nodes.registry import Registry, build_registry

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
MIXED = """version: 1
nodes:
  base:     {type: diffusion.load_model, path: "builtin:tinyxl"}
  refiner:  {type: diffusion.load_model, path: "builtin:tinyxl-refiner"}
  cnet:     {type: control.load_controlnet, path: "%s"}
  unit:     {type: control.controlnet, model: "@cnet", image: "@image"}
  image:    {type: core.load_image, path: "%s"}
  positive: {type: diffusion.encode_text, encoder: "@%s.text_encoder", text: "a red circle"}
  negative: {type: diffusion.encode_text, encoder: "@refiner.text_encoder", text: ""}
  start:    {type: diffusion.empty_latents, width: 64, height: 64}
  out:      {type: diffusion.sample, unet: "@refiner.unet", scheduler: "@refiner.scheduler",
             positive: "@positive", negative: "@negative", latents: "@start", steps: 2, denoise: 0.5%s}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def problems(registry: Registry, path: Path, params: dict[str, object] | None = None) -> str:
    with pytest.raises(GraphError) as info:
        load_plan(path, registry, params or {})
    assert info.value.problems and all(p.line for p in info.value.problems)
    return str(info.value)


def test_a_refiner_in_the_sdxl_txt2img_graph_fails_validation(registry: Registry, tmp_path: Path) -> None:
    load_plan(GRAPHS / "sdxl.yaml", registry, {})  # the base is fine
    text = problems(registry, GRAPHS / "sdxl.yaml", {"model": "builtin:tinyxl-refiner"})
    assert "node 'latents', field 'unet'" in text and "SDXL refiner" in text and "node 'empty'" in text, text
    # the refiner after the base, or on an image at denoise < 1, is what it is for
    load_plan(GRAPHS / "sdxl_refiner.yaml", registry, {})
    result = CliRunner().invoke(app, ["run", str(GRAPHS / "sdxl.yaml"), "--out", str(tmp_path / "out"),
                                      "--no-cache", "-q", "--set", "model=builtin:tinyxl-refiner"],
                                obj={"registry": registry})
    assert result.exit_code == 2, result.output
    assert "sdxl.yaml" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_base_conditioning_into_a_refiner_unet_fails_validation(registry: Registry, tmp_path: Path) -> None:
    xl_controlnet = "builtin:tinyxl-edge"  # an SDXL ControlNet made for the base (tinyxl)
    image = GRAPHS / "inputs" / "scene_64.png"
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED % (xl_controlnet, image, "refiner", ""))
    load_plan(path, registry, {})  # the refiner's own prompts fit its UNet
    path.write_text(MIXED % (xl_controlnet, image, "base", ""))
    text = problems(registry, path)
    assert "node 'out', field 'positive'" in text and "64 wide from node 'positive' (model node 'base')" in text
    assert "'unet' from node 'refiner'" in text and "32-wide" in text, text
    path.write_text(MIXED % (xl_controlnet, image, "refiner", ", conditions: [\"@unit\"]"))
    text = problems(registry, path)  # a ControlNet made for the base (64) on the refiner (32)
    assert "field 'conditions'" in text and "from node 'unit'" in text and "64 wide" in text, text
