"""Swap-minimising order on a graph interleaving two checkpoints; real runs under tight budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nodegraph import Engine, RunOptions
from nodegraph.runtime.executor import execution_order
from nodegraph.runtime.ordering import count_switches, model_groups, swap_aware_order
from nodegraph.runtime.residency import ResidencyManager, module_bytes, move_module

# document order interleaves the two checkpoints at every stage
TWO = """
version: 1
params:
  a: {type: str}
  b: {type: str}
nodes:
  ma:    {type: diffusion.load_model, path: $a}
  mb:    {type: diffusion.load_model, path: $b}
  pos_a: {type: diffusion.encode_text, encoder: "@ma.text_encoder", text: "a red circle"}
  pos_b: {type: diffusion.encode_text, encoder: "@mb.text_encoder", text: "a red circle"}
  neg_a: {type: diffusion.encode_text, encoder: "@ma.text_encoder", text: ""}
  neg_b: {type: diffusion.encode_text, encoder: "@mb.text_encoder", text: ""}
  empty: {type: diffusion.empty_latents, width: 32, height: 32}
  lat_a: {type: diffusion.sample, unet: "@ma.unet", scheduler: "@ma.scheduler", positive: "@pos_a",
          negative: "@neg_a", latents: "@empty", steps: 3, seed: 1}
  lat_b: {type: diffusion.sample, unet: "@mb.unet", scheduler: "@mb.scheduler", positive: "@pos_b",
          negative: "@neg_b", latents: "@empty", steps: 3, seed: 1}
  ref_a: {type: diffusion.sample, unet: "@ma.unet", scheduler: "@ma.scheduler", positive: "@pos_a",
          negative: "@neg_a", latents: "@lat_a", steps: 4, denoise: 0.5, seed: 2}
  ref_b: {type: diffusion.sample, unet: "@mb.unet", scheduler: "@mb.scheduler", positive: "@pos_b",
          negative: "@neg_b", latents: "@lat_b", steps: 4, denoise: 0.5, seed: 2}
  img_a: {type: diffusion.vae_decode, vae: "@ma.vae", latents: "@ref_a"}
  img_b: {type: diffusion.vae_decode, vae: "@mb.vae", latents: "@ref_b"}
"""
TXT2IMG = Path(__file__).resolve().parents[3] / "graphs" / "txt2img.yaml"


def _two(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(TWO)
    return path


def test_smart_order_groups_each_checkpoint(tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    a, b = two_models
    plan = Engine().load(_two(tmp_path), {"a": str(a), "b": str(b)})
    groups = model_groups(plan)
    assert groups["lat_a"] == groups["pos_a"] == groups["img_a"] == {"ma"}
    assert groups["empty"] == frozenset()
    smart, naive = swap_aware_order(plan), execution_order(plan)
    # nodes needing no model go first (they are free), then all of checkpoint a, then all of b
    assert smart == ["ma", "mb", "empty", "pos_a", "neg_a", "lat_a", "ref_a", "img_a",
                     "pos_b", "neg_b", "lat_b", "ref_b", "img_b"]
    assert count_switches(smart, groups) == 1
    assert count_switches(naive, groups) > 1


def test_order_without_models_is_the_document_order(tmp_path: Path) -> None:
    plan = Engine().load(TXT2IMG.parents[0] / "core_text.yaml")
    assert swap_aware_order(plan) == execution_order(plan)


def _component_bytes(path: Path) -> dict[str, int]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return {name: module_bytes(cls.from_pretrained(path, subfolder=name, local_files_only=True))
            for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL),
                              ("text_encoder", CLIPTextModel))}


def test_smart_order_loads_each_model_once_under_a_tight_ram_budget(
        tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    a, b = two_models
    sizes = _component_bytes(a)
    budget = max(sizes.values()) + 1024  # one component at a time
    overrides = {"a": str(a), "b": str(b)}
    runs: dict[str, Any] = {}
    for order in ("smart", "document"):
        engine = Engine(ram_budget=budget)
        result = engine.run(_two(tmp_path), overrides,
                            RunOptions(out_dir=tmp_path / order, device="cpu", order=order))
        runs[order] = (engine.resources.load_count(), result)
        assert result.resources["peak_bytes"]["cpu"] <= budget
    smart_loads, smart = runs["smart"]
    naive_loads, naive = runs["document"]
    assert smart_loads == 8  # tokenizer, text encoder, UNet, VAE of each checkpoint, once
    assert naive_loads > smart_loads, naive_loads
    assert smart.resources["loads"] == 8 and smart.resources["drops"] >= 5
    for node in ("img_a", "img_b"):  # the order changes nothing in the results
        assert torch.equal(smart.outputs[node]["out"].pixels, naive.outputs[node]["out"].pixels)


def _standin_engine(vram: int | None) -> Engine:
    """CPU plays the accelerator; a host stand-in ("ram") plays CPU RAM, so offloads are bookkeeping."""

    def mover(value: Any, device: str, dtype: Any) -> Any:
        return value if device == "ram" else move_module(value, device, dtype)

    return Engine(resources=ResidencyManager(vram_budget={"cpu": vram} if vram else None, host="ram",
                                             mover=mover))


def test_vram_budget_respected_and_outputs_unchanged(tmp_path: Path) -> None:
    sizes = _component_bytes(TXT2IMG.parent.parent / "plugins" / "nodegraph_diffusion" / "builtin" / "tinyworld")
    budget = sizes["unet"] + sizes["vae"] // 2  # the UNet fits, but not beside the text encoder
    options = RunOptions(out_dir=tmp_path / "o", device="cpu")
    free = _standin_engine(None).run(TXT2IMG, {"steps": 4}, options)
    tight_engine = _standin_engine(budget)
    tight = tight_engine.run(TXT2IMG, {"steps": 4}, options)
    assert torch.equal(free.outputs["image"]["out"].pixels, tight.outputs["image"]["out"].pixels)
    report = tight.report_json()["resources"]
    assert report["peak_bytes"]["cpu"] <= budget
    assert report["offloads"] >= 1 and report["loads"] == free.resources["loads"]
    assert report["budgets"]["cpu"] == budget
    assert tight_engine.resources.where(next(k for k in tight_engine.resources._entries
                                              if k.endswith(":text_encoder"))) == "ram"


# one checkpoint, two ControlNets; document order alternates them (pose, edge, pose)
CONTROLS = """
version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinyworld"}
  pose_net: {type: control.load_controlnet, path: "builtin:tinyworld-pose"}
  edge_net: {type: control.load_controlnet, path: "builtin:tinyworld-edge"}
  blank:    {type: control.render_pose, keypoints: "POSE", width: 64, height: 64}
  pos:      {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64}
  pose_1:   {type: control.controlnet, model: "@pose_net", image: "@blank"}
  s1:       {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@pos",
             latents: "@empty", conditions: ["@pose_1"], steps: 2}
  edge_2:   {type: control.controlnet, model: "@edge_net", image: "@blank"}
  s2:       {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@pos",
             latents: "@empty", conditions: ["@edge_2"], steps: 2}
  pose_3:   {type: control.controlnet, model: "@pose_net", image: "@blank", strength: 0.5}
  s3:       {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@pos",
             latents: "@empty", conditions: ["@pose_3"], steps: 2}
"""


def test_samplers_using_one_controlnet_run_together(tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    pose = Path(__file__).resolve().parents[3] / "graphs" / "poses" / "standing_512x512.json"
    path.write_text(CONTROLS.replace("POSE", str(pose)))
    plan = Engine().load(path)
    groups = model_groups(plan)
    assert groups["s1"] == groups["s3"] == {"model", "pose_net"}  # the unit carries its ControlNet
    assert groups["s2"] == {"model", "edge_net"} and groups["pose_1"] == {"pose_net"}
    smart = swap_aware_order(plan)
    assert smart.index("s3") == smart.index("s1") + 1 < smart.index("s2")  # the pose net stays in use
    assert count_switches(smart, groups) < count_switches(execution_order(plan), groups)
