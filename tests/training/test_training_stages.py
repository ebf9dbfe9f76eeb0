"""Every training stage runs end to end at toy size (a few steps each) and leaves loadable, shippable weights.

Not a quality test (the evaluation in README does that): it keeps the recipe runnable — each stage reads
what the one before wrote, resuming continues from saved weights, and `ship` + `evaluate` accept the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import LatentSet, scene_at
from training.world import draw_skeleton, reframe, sample_scene

SIZE = 64


def _figure_scene(seed: int) -> tuple[int, object]:
    index = next(i for i in range(100) if sample_scene(seed, i).figure is not None)
    return index, sample_scene(seed, index)


def test_reframe_moves_skeleton_and_drawing_together_and_drops_points_outside() -> None:
    seed = 31
    framed = [(i, scene_at(seed, i, "varied")) for i in range(60)]
    figures = [(i, s) for i, s in framed if s.figure is not None]
    assert any(s.figure.height > sample_scene(seed, i).figure.height * 1.2 for i, s in figures)  # close-ups
    for _i, scene in figures:
        for (x, y), shown in zip(scene.figure.keypoints, scene.figure.visible, strict=True):
            if not (0 <= x < SIZE and 0 <= y < SIZE):
                assert not shown  # a keypoint outside the image is not in the skeleton
    index, scene = _figure_scene(seed)
    assert reframe(scene, seed, index) == reframe(scene, seed, index)  # deterministic per (seed, index)
    assert np.array_equal(draw_skeleton(scene_at(seed, index)), draw_skeleton(scene))  # standard = unchanged


def test_all_stages_at_toy_size_then_ship_and_evaluate(tmp_path: Path) -> None:
    from training.evaluate import Family, eval_multi, eval_p2p, eval_text
    from training.ship import MARKER, ship
    from training.train_base import encode_stage, train_base
    from training.train_control import train_controlnet
    from training.train_lora import train_lora
    from training.train_vae import train_decoder, train_vae

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    train_vae(run, steps=2, batch=4, pool=40)
    encode_stage(run, seed=1, count=96)
    assert len(LatentSet.load(run / "latents.pt").captions) == 96
    before = (run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    train_decoder(run, steps=2, batch=4, plain=32, outlined=0)
    assert (run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() != before
    train_base(run, steps=2, batch=8)
    train_base(run, steps=2, batch=8, resume=True)
    train_controlnet(run, kind="pose", steps=2, batch=4, limit=32, reframed=16)
    assert LatentSet.load(run / "latents-reframed.pt").framing == "varied"
    train_controlnet(run, kind="pose", steps=2, batch=4, limit=32, resume=True)
    train_controlnet(run, kind="edge", steps=2, batch=4, limit=32)
    train_lora(run, steps=2, batch=4, count=16)
    builtin = tmp_path / "builtin"
    written = ship(run, builtin, dtype="float16")
    assert {p.name for p in written} == {"tinyworld", "tinyworld-pose", "tinyworld-edge", "tinyworld-style"}
    assert (builtin / "tinyworld" / MARKER).is_file()
    family = Family.at(builtin)
    scores, _images, _prompts = eval_text(family, 2)
    assert set(scores) == {"background", "color", "shape", "position"}
    p2p, _ = eval_p2p(family, 1)
    assert 0.0 <= p2p["box_iou"] <= 1.0 and 0.0 <= p2p["mask_iou"] <= 1.0
    multi, _ = eval_multi(family, 2)
    assert {"coverage", "edge_f1", "outline", "outline_without_lora"} <= set(multi)
