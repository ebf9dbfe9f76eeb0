"""Model families are pluggable: a third-party package adds one through an entry point, no engine edit.

The toy pack below is written to a temporary folder and found through a (faked) entry point of the
group `nodegraph_diffusion.families`, exactly as an installed package's would be.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion import families
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"

TOY_PACK = '''
from nodegraph_diffusion.families.base import ModelFamily
from nodegraph_diffusion.families.sd1 import SD1Family

CALLS = []  # test-only spy


class ToyFamily(ModelFamily):
    """SD1.x weights under another name; its denoiser gets a class label (the toy 'extra input')."""

    name = "toy"
    label = "Toy"

    def recognise_folder(self, index):
        return index.get("_class_name") == "ToyPipeline"

    def encode(self, ctx, handle, request):
        from dataclasses import replace

        CALLS.append("encode")
        return replace(SD1Family().encode(ctx, handle, request), family=self.name)

    def added_cond_kwargs(self, unet, positive, negative, request):
        CALLS.append(("added", request.batch, request.do_cfg, request.height, request.width))
        return None
'''


@pytest.fixture
def toy_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "toy_family_pack.py").write_text(TOY_PACK)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    group = families.ENTRY_POINT_GROUP
    fakes = [importlib.metadata.EntryPoint("toy", "toy_family_pack:ToyFamily", group),
             importlib.metadata.EntryPoint("broken", "no_such_module_anywhere:Nothing", group)]

    def entry_points(**kwargs: Any) -> Any:
        return fakes if kwargs.get("group") == group else real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    import toy_family_pack

    toy_family_pack.CALLS.clear()
    return toy_family_pack


@pytest.fixture
def toy_model(tmp_path: Path, tiny_dir: Path) -> Path:
    folder = tmp_path / "toy-model"
    shutil.copytree(tiny_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "ToyPipeline"}))
    return folder


def test_builtin_families_come_first() -> None:
    names = [f.name for f in families.available_families()]
    assert names[:2] == ["sd1", "sdxl"]
    with pytest.raises(KeyError, match="no model family 'toy'"):
        families.family_named("toy")


def test_unknown_folder_family_is_refused_without_the_pack(ctx: Any, toy_model: Path) -> None:
    with pytest.raises(InputError, match="ToyPipeline model, of no model family"):
        load_model(ctx, ModelRef(str(toy_model)))


def test_a_pack_adds_a_family_the_nodes_dispatch_on(toy_pack: Any, toy_model: Path, tmp_path: Path) -> None:
    # the built-ins first, the broken pack family left out
    assert [f.name for f in families.available_families()] == ["sd1", "sdxl", "sd3", "flux", "toy"]
    options = RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)
    params = {"model": str(toy_model), "steps": 3, "seed": 2}
    toy = Engine().run(GRAPHS / "txt2img.yaml", params, options)
    assert toy.outputs["model"]["unet"].source.family == "toy"
    assert toy.outputs["positive"]["out"].family == "toy"
    assert toy_pack.CALLS == ["encode", "encode", ("added", 1, True, 64, 64)]
    # the same weights as SD1.x give the same latents: the toy family only renamed them
    plain = Engine().run(GRAPHS / "txt2img.yaml", {**params, "model": "builtin:tinyworld"},
                         RunOptions(out_dir=tmp_path / "plain", device="cpu", dtype="float32",
                                    show_progress=False))
    assert torch.equal(toy.outputs["latents"]["out"].samples, plain.outputs["latents"]["out"].samples)


def test_a_pack_family_is_checked_at_validation(toy_pack: Any, toy_model: Path, tmp_path: Path) -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    registry = build_registry()
    load_plan(GRAPHS / "txt2img.yaml", registry, {"model": str(toy_model)})
    path = tmp_path / "mixed.yaml"
    path.write_text(f"""version: 1
nodes:
  toy:    {{type: diffusion.load_model, path: "{toy_model}"}}
  sd1:    {{type: diffusion.load_model, path: "builtin:tinyworld"}}
  text:   {{type: diffusion.encode_text, encoder: "@toy.text_encoder", text: "a red circle"}}
  empty:  {{type: diffusion.empty_latents, width: 64, height: 64}}
  out:    {{type: diffusion.sample, unet: "@sd1.unet", scheduler: "@sd1.scheduler", positive: "@text",
           latents: "@empty", cfg: 1.0, steps: 2}}
""")
    with pytest.raises(GraphError, match="'positive' gets Toy conditioning from node 'text'"):
        load_plan(path, registry)
