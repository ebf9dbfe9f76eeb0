"""A T2I-Adapter or IP-Adapter of one model family on a sampler of another fails validation, before any
weights load, naming the unit, its model node and the UNet's node; matching families validate.

SD1.x models on SDXL: tests/fixtures/invalid/sd1_*_on_sdxl.yaml (file, line and CLI exit 2 checked
by tests/engine/document/test_corpus.py). Here the reverse, with SDXL models the test writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodegraph.document.load import load_plan
from nodegraph.errors import GraphError
from nodegraph.nodes.registry import build_registry

GRAPH = """version: 1
nodes:
  model:   {{type: diffusion.load_model, path: "{model}"}}
  text:    {{type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}}
  empty:   {{type: diffusion.empty_latents, width: 64, height: 64}}
  image:   {{type: core.load_image, path: "{image}"}}
  adapter: {{type: {loader}, path: "{adapter}"}}
{unit}
  latents: {{type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@text",
            latents: "@empty", cfg: 1.0, steps: 2, conditions: ["@unit"]}}
"""
T2I = '  unit:    {type: control.t2i_adapter, model: "@adapter", image: "@image"}'
IP = ('  embeds:  {type: control.encode_ip_image, model: "@adapter", image: "@image"}\n'
      '  unit:    {type: control.ip_adapter, model: "@adapter", embeds: "@embeds"}')
LOADERS = {"t2i": ("control.load_t2i_adapter", T2I), "ip": ("control.load_ip_adapter", IP)}


@pytest.fixture(scope="module")
def xl_adapters(xl_base: Any, xl_nets: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The T2I-Adapter-XL of `xl_nets` and an IP-Adapter for the tiny SDXL UNet."""
    from nodegraph_control.tiny_ip_adapter import save_ip_adapter

    root = tmp_path_factory.mktemp("xl-ip")
    folder = save_ip_adapter(root / "ip", xl_base.unet, "ip-adapter_xl.safetensors")
    return {"t2i": xl_nets["adapter"], "ip": folder}


def plan(tmp_path: Path, model: str, kind: str, adapter: Path | str) -> Any:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    loader, unit = LOADERS[kind]
    image = BUILTIN_DIR.parents[2] / "graphs" / "inputs" / "scene_64.png"
    path = tmp_path / f"{kind}.yaml"
    path.write_text(GRAPH.format(model=model, image=image, loader=loader, adapter=adapter, unit=unit))
    return load_plan(path, build_registry())


@pytest.mark.parametrize("kind", ["t2i", "ip"])
def test_sdxl_adapter_on_sd1_sampler_fails_validation(tmp_path, xl_adapters, kind):
    with pytest.raises(GraphError) as info:
        plan(tmp_path, "builtin:tinyworld", kind, xl_adapters[kind])
    (problem,) = info.value.problems
    line = 10 + LOADERS[kind][1].count("\n")  # the `conditions:` line
    assert (problem.node, problem.field, problem.line) == ("latents", "conditions", line)
    assert "'conditions' gets a SDXL control unit from node 'unit' (model node 'adapter')" in str(problem)
    assert "'unet' is an SD1.x UNet from node 'model'" in str(problem)


@pytest.mark.parametrize("kind", ["t2i", "ip"])
def test_adapters_of_the_samplers_family_validate(tmp_path, xl_adapters, kind):
    plan(tmp_path, "builtin:tinyxl", kind, xl_adapters[kind])
    sd1 = {"t2i": "builtin:tinyworld-adapter", "ip": "builtin:tinyworld-ip-adapter"}[kind]
    plan(tmp_path, "builtin:tinyworld", kind, sd1)


@pytest.mark.parametrize("name", ["tinyworld-adapter", "tinyworld-pose"])
def test_sd1_control_model_on_sdxl_sampler_is_an_input_error_when_run(make_ctx, name):
    """Without validation (library use): refused before the first step, naming the file; not a shape error."""
    from nodegraph_control.nodes import controlnet, load_controlnet, load_t2i_adapter, t2i_adapter
    from nodegraph_core.types import Image

    from nodegraph.errors import InputError
    from tests.control.sdxl_helpers import ours, pixels

    ctx = make_ctx()
    if name.endswith("adapter"):
        unit = t2i_adapter(load_t2i_adapter(ctx, f"builtin:{name}"), Image(pixels(1)))
    else:
        unit = controlnet(load_controlnet(ctx, f"builtin:{name}"), Image(pixels(1)))
    with pytest.raises(InputError, match="is made for SD1.x models, but the sampler's UNet is SDXL") as info:
        ours(ctx, [unit])
    assert info.value.field == "conditions" and name in str(info.value)
