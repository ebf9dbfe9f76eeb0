"""Loading control models: diffusers folders, single files, pickle refusal, bad inputs, builders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from nodegraph_control.models import load_control_model
from nodegraph_control.nodes import controlnet, load_controlnet, load_t2i_adapter

from nodegraph.api import InputError


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_builtin_references(make_ctx):
    ctx = make_ctx()
    pose = load_controlnet(ctx, "builtin:tinyworld-pose")
    assert pose.format == "diffusers" and pose.path.endswith("tinyworld-pose")
    assert load_controlnet(ctx, "builtin:tinyworld-pose") == pose  # hashable, stable fingerprint
    assert load_controlnet(ctx, "builtin:tinyworld-edge").fingerprint != pose.fingerprint
    assert load_t2i_adapter(ctx, "builtin:tinyworld-adapter").format == "diffusers"
    with pytest.raises(InputError, match="not a T2I-Adapter|describes a ControlNetModel"):
        load_t2i_adapter(ctx, "builtin:tinyworld-pose")
    with pytest.raises(InputError, match="no built-in model"):
        load_controlnet(ctx, "builtin:nope")


def test_single_file_in_diffusers_layout(builtin, tmp_path, make_ctx):
    ctx = make_ctx()
    shutil.copy(
        builtin / "tinyworld-pose" / "diffusion_pytorch_model.safetensors", tmp_path / "pose.safetensors"
    )
    with pytest.raises(InputError, match="without a config"):
        load_controlnet(ctx, str(tmp_path / "pose.safetensors"))
    shutil.copy(builtin / "tinyworld-pose" / "config.json", tmp_path / "pose.json")
    handle = load_controlnet(ctx, str(tmp_path / "pose.safetensors"))
    assert handle.format == "single_file"
    folder = load_control_model(load_controlnet(ctx, "builtin:tinyworld-pose"), ctx, "controlnet")
    assert same_weights(load_control_model(handle, ctx, "controlnet"), folder)


def test_pickle_refused_unless_allowed(builtin, tmp_path, make_ctx):
    from safetensors.torch import load_file

    state = load_file(builtin / "tinyworld-pose" / "diffusion_pytorch_model.safetensors")
    torch.save(state, tmp_path / "pose.ckpt")
    shutil.copy(builtin / "tinyworld-pose" / "config.json", tmp_path / "pose.json")
    with pytest.raises(InputError, match="pickle"):
        load_controlnet(make_ctx(), str(tmp_path / "pose.ckpt"))
    ctx = make_ctx(allow_pickle=True)
    model = load_control_model(load_controlnet(ctx, str(tmp_path / "pose.ckpt")), ctx, "controlnet")
    assert model.controlnet_mid_block.weight.abs().sum() > 0


def test_corrupt_and_wrong_files(tmp_path, make_ctx):
    ctx = make_ctx()
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="corrupt"):
        load_controlnet(ctx, str(tmp_path / "junk.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without config.json"):
        load_controlnet(ctx, str(tmp_path / "empty"))
    with pytest.raises(InputError, match="not found"):
        load_controlnet(ctx, str(tmp_path / "missing.safetensors"))


def test_controlnet_node_checks_range():
    from nodegraph_control.models import ControlNetHandle
    from nodegraph_core.types import Image

    with pytest.raises(InputError, match="start 0.8 must be below end 0.5"):
        controlnet(ControlNetHandle("x", "f", "diffusers"), Image(torch.zeros(1, 3, 8, 8)), 1.0, 0.8, 0.5)


def test_builders_are_deterministic_and_the_committed_pose_model_is_trained_on_their_architecture(
        builtin, make_ctx):
    from nodegraph_control.tiny_control import SEEDS, build_tiny_adapter, build_tiny_controlnet, tiny_unet

    unet = tiny_unet()
    ctx = make_ctx()
    pose = build_tiny_controlnet(unet, SEEDS["tinyworld-pose"])
    assert same_weights(pose, build_tiny_controlnet(unet, SEEDS["tinyworld-pose"]))
    committed = load_control_model(load_controlnet(ctx, "builtin:tinyworld-pose"), ctx, "controlnet")
    def shapes(model):  # the trained model's control-image embedding is wider; the rest is the UNet's
        return {k: v.shape for k, v in model.state_dict().items() if not k.startswith("controlnet_cond_")}

    assert shapes(pose) == shapes(committed)
    assert not same_weights(pose, committed)  # trained by training/, not the random factory's
    adapter = load_control_model(load_t2i_adapter(ctx, "builtin:tinyworld-adapter"), ctx, "t2i_adapter")
    assert same_weights(build_tiny_adapter(unet, SEEDS["tinyworld-adapter"]), adapter)
    config = json.loads((builtin / "tinyworld-adapter" / "config.json").read_text())
    assert config["channels"] == list(unet.config.block_out_channels)
    sizes = sum(f.stat().st_size for n in SEEDS for f in (builtin / n).iterdir())
    assert sizes < 8_000_000
