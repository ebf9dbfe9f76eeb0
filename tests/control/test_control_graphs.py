"""The shipped control graphs run through the engine, offline, and match diffusers where one exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nodegraph import Engine
from nodegraph.errors import NodegraphError
from tests.run_helpers import cpu_options as options
from tests.run_helpers import png_pixels as png

ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ROOT / "graphs"
FAST = {"steps": 5}



def pose_pipeline(builtin: Path):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from nodegraph_diffusion.loading import own_storage
    from nodegraph_diffusion.schedulers import make_scheduler
    from nodegraph_diffusion.types import SchedulerSpec

    controlnet = own_storage(
        ControlNetModel.from_pretrained(builtin / "tinyworld-pose", local_files_only=True)
    )
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        builtin / "tinyworld",
        controlnet=controlnet,
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part)
    pipe.scheduler = make_scheduler(
        SchedulerSpec("dpmpp_2m", tuple(sorted(dict(pipe.scheduler.config).items())))
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_controlnet_pose_graph_equals_pipeline(tmp_path, builtin):
    result = Engine().run(GRAPHS / "controlnet_pose.yaml", {**FAST, "seed": 3}, options(tmp_path))
    skeleton = result.outputs["skeleton"]["out"].pixels
    assert tuple(skeleton.shape) == (1, 3, 64, 64) and skeleton.max() > 0
    assert np.array_equal(
        png(tmp_path / "pose_skeleton.png"),
        (skeleton[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
    )
    pipe = pose_pipeline(builtin)
    kwargs = dict(
        negative_prompt="", image=skeleton, height=64, width=64, num_inference_steps=5, guidance_scale=3.0
    )
    theirs = pipe(
        "a person in a red shirt, green background",
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        **kwargs,
    ).images
    ours = result.outputs["latents"]["out"].samples
    assert (ours - theirs).abs().max().item() == 0.0
    image = pipe(
        "a person in a red shirt, green background", generator=torch.Generator().manual_seed(3), **kwargs
    ).images[0]
    assert np.array_equal(png(tmp_path / "controlnet_pose.png"), np.asarray(image))


def test_controlnet_pose_graph_other_pose_file(tmp_path, poses):
    engine = Engine()
    first = engine.run(GRAPHS / "controlnet_pose.yaml", FAST, options(tmp_path / "a"))
    other = str(poses / "openpose_editor_normalized_missing_legs.json")  # normalised, 768 x 512 canvas
    second = engine.run(GRAPHS / "controlnet_pose.yaml", {**FAST, "pose": other}, options(tmp_path / "b"))
    assert {"skeleton", "pose_cn", "latents", "image"} <= set(second.executed)
    assert {"model", "positive", "negative", "cnet"}.isdisjoint(second.executed)
    a, b = first.outputs["skeleton"]["out"].pixels, second.outputs["skeleton"]["out"].pixels
    assert not torch.equal(a, b)
    assert b[0, :, :8].max() == 0 and b[0, :, -8:].max() == 0  # landscape canvas: letterboxed
    assert not torch.equal(first.outputs["latents"]["out"].samples, second.outputs["latents"]["out"].samples)


def test_controlnet_pose_graph_strength_zero_is_plain_txt2img(tmp_path):
    pose = Engine().run(GRAPHS / "controlnet_pose.yaml", {**FAST, "strength": 0.0}, options(tmp_path / "a"))
    plain = Engine().run(
        GRAPHS / "txt2img.yaml",
        {**FAST, "prompt": "a person in a red shirt, green background"},
        options(tmp_path / "b"),
    )
    assert torch.equal(pose.outputs["latents"]["out"].samples, plain.outputs["latents"]["out"].samples)


def test_controlnet_pose_graph_bad_pose_file(tmp_path, poses):
    with pytest.raises(NodegraphError, match="animal pose") as info:
        Engine().run(
            GRAPHS / "controlnet_pose.yaml",
            {**FAST, "pose": str(poses / "edge_animal_pose_ap10k.json")},
            options(tmp_path),
        )
    assert "skeleton" in str(info.value)
    assert not (tmp_path / "controlnet_pose.png").exists() and not (tmp_path / "pose_skeleton.png").exists()


def test_headline_cli_run_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodegraph",
            "run",
            str(GRAPHS / "controlnet_pose.yaml"),
            "--out",
            str(tmp_path),
            "--set",
            "steps=3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png(tmp_path / "controlnet_pose.png").shape == (64, 64, 3)
    assert png(tmp_path / "pose_skeleton.png").any()


def test_multi_condition_graph_runs_and_each_condition_acts(tmp_path):
    engine = Engine()
    base = engine.run(GRAPHS / "multi_condition.yaml", FAST, options(tmp_path / "all"))
    for name in ("multi_condition.png", "multi_pose.png", "multi_edges.png"):
        assert (tmp_path / "all" / name).is_file()
    latents = base.outputs["latents"]["out"].samples
    edges = base.outputs["edges"]["out"].pixels
    assert set(torch.unique(edges).tolist()) == {0.0, 1.0}
    for knob in ("pose_strength", "edge_strength", "adapter_weight", "lora_weight"):
        off = engine.run(GRAPHS / "multi_condition.yaml", {**FAST, knob: 0.0}, options(tmp_path / knob))
        assert "model" not in off.executed and "photo" not in off.executed
        assert not torch.equal(off.outputs["latents"]["out"].samples, latents), knob
