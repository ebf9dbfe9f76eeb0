"""graphs/ip_adapter.yaml through the engine: equals the diffusers pipeline, caches the encoding, leaves
the shared UNet clean for the next graph, composes with every other condition; bad files fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from nodegraph_control.tiny_ip_adapter import NAME, WEIGHT_NAME
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.errors import NodegraphError
from tests.control.test_control_graphs import GRAPHS, options, png
from tests.control.test_ip_adapter import with_ip_adapter

FAST = {"steps": 4, "seed": 3}
PROMPT = "a big red circle in the center, blue background"  # the graph's default


def test_ip_adapter_graph_equals_pipeline(tmp_path, builtin):
    from diffusers import StableDiffusionPipeline
    from nodegraph_diffusion.loading import own_storage
    from nodegraph_diffusion.schedulers import make_scheduler
    from nodegraph_diffusion.types import SchedulerSpec

    engine = Engine()
    result = engine.run(GRAPHS / "ip_adapter.yaml", {**FAST, "ip_scale": 0.6}, options(tmp_path / "a"))
    pipe = StableDiffusionPipeline.from_pretrained(
        builtin / "tinyworld", local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part)
    pipe.scheduler = make_scheduler(SchedulerSpec("dpmpp_2m", tuple(sorted(dict(pipe.scheduler.config).items()))))
    with_ip_adapter(pipe, builtin, 0.6)
    with PILImage.open(GRAPHS / "inputs" / "scene_64.png") as im:
        reference = im.convert("RGB")
    kwargs = dict(
        negative_prompt="",
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=3.0,
        ip_adapter_image=reference,
    )
    theirs = pipe(PROMPT, generator=torch.Generator().manual_seed(3), output_type="latent", **kwargs).images
    ours = result.outputs["latents"]["out"].samples
    assert (ours - theirs).abs().max().item() == 0.0
    image = pipe(PROMPT, generator=torch.Generator().manual_seed(3), **kwargs).images[0]
    assert np.array_equal(png(tmp_path / "a" / "ip_adapter.png"), np.asarray(image))

    # a new scale re-runs the unit and the sampler onward only; the reference is not encoded again
    second = engine.run(GRAPHS / "ip_adapter.yaml", {**FAST, "ip_scale": 0.0}, options(tmp_path / "b"))
    assert set(second.executed) == {"ip", "latents", "image", "save"}
    fp = result.outputs["model"]["unet"].source.fingerprint
    assert engine.resources.load_count(f"{fp}:unet") == 1
    # scale 0 is the plain image; and the shared UNet is clean for the next graph in this engine
    txt = {**FAST, "prompt": PROMPT, "scheduler": "dpmpp_2m"}  # the graph's scheduler
    after = engine.run(GRAPHS / "txt2img.yaml", txt, options(tmp_path / "c"))
    fresh = Engine().run(GRAPHS / "txt2img.yaml", txt, options(tmp_path / "d"))
    plain = fresh.outputs["latents"]["out"].samples
    assert torch.equal(after.outputs["latents"]["out"].samples, plain)
    assert torch.equal(second.outputs["latents"]["out"].samples, plain)
    assert not torch.equal(ours, plain)


def test_ip_adapter_in_the_multi_condition_graph(tmp_path):
    """LoRA + pose and edge ControlNets + T2I-Adapter + IP-Adapter + attention capture in one sampler."""
    doc = yaml.safe_load((GRAPHS / "multi_condition.yaml").read_text())
    doc["params"]["ip_scale"] = {"type": "float", "default": 0.7}
    doc["nodes"].update(
        {
            "ip_model": {"type": "control.load_ip_adapter", "path": "builtin:tinyworld-ip-adapter"},
            "ip_embeds": {"type": "control.encode_ip_image", "model": "@ip_model", "image": "@photo"},
            "ip": {
                "type": "control.ip_adapter",
                "model": "@ip_model",
                "embeds": "@ip_embeds",
                "scale": "$ip_scale",
            },
            "capture": {"type": "attention.capture_maps", "name": "maps"},
        }
    )
    doc["nodes"]["latents"]["conditions"] = ["@capture", "@pose_cn", "@ip", "@edge_cn", "@edge_t2i"]
    graph = tmp_path / "multi_ip.yaml"
    graph.write_text(yaml.safe_dump(doc))
    files = {
        "pose": str(GRAPHS / "poses" / "arms_wide_768x512.json"),
        "edge_image": str(GRAPHS / "inputs" / "scene_64.png"),
    }
    engine = Engine()
    with_ip = engine.run(graph, {**FAST, **files}, options(tmp_path / "a"))
    without = engine.run(graph, {**FAST, **files, "ip_scale": 0.0}, options(tmp_path / "b"))
    reference = Engine().run(GRAPHS / "multi_condition.yaml", FAST, options(tmp_path / "c"))
    plain_multi = reference.outputs["latents"]["out"].samples
    assert torch.equal(without.outputs["latents"]["out"].samples, plain_multi)  # IP at 0 disturbs nothing
    assert not torch.equal(with_ip.outputs["latents"]["out"].samples, plain_multi)
    assert with_ip.outputs["latents"]["out"].extras["maps"].layers > 0


def _run_adapter(tmp_path: Path, adapter: Path, **opts: Any) -> Any:
    return Engine().run(
        GRAPHS / "ip_adapter.yaml",
        {**FAST, "steps": 1, "adapter": str(adapter)},
        RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False, **opts),
    )


def test_missing_image_encoder_names_the_path(tmp_path, builtin):
    lonely = tmp_path / "a" / "b" / WEIGHT_NAME
    lonely.parent.mkdir(parents=True)
    shutil.copyfile(builtin / NAME / WEIGHT_NAME, lonely)
    with pytest.raises(NodegraphError, match="no CLIP image encoder") as info:
        _run_adapter(tmp_path, lonely)
    assert str(lonely) in str(info.value) and "image_encoder" in str(info.value)
    assert not (tmp_path / "out" / "ip_adapter.png").exists()


def test_wrong_key_layout_names_the_path(tmp_path, builtin):
    from safetensors.torch import save_file

    shutil.copytree(builtin / NAME / "image_encoder", tmp_path / "image_encoder")
    bad = tmp_path / "not_an_adapter.safetensors"
    save_file({"lora_unet.down.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(NodegraphError, match="is not an IP-Adapter file") as info:
        _run_adapter(tmp_path, bad)
    assert str(bad) in str(info.value) and "image_proj" in str(info.value)


def test_pickled_adapter_refused_unless_allowed(tmp_path, builtin, make_ctx):
    from nodegraph_control.ip_adapter_files import describe_ip_adapter, read_adapter
    from safetensors.torch import load_file

    from nodegraph.errors import InputError

    shutil.copytree(builtin / NAME / "image_encoder", tmp_path / "image_encoder")
    flat = load_file(str(builtin / NAME / WEIGHT_NAME))
    nested = {
        part: {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(part + ".")}
        for part in ("image_proj", "ip_adapter")
    }  # the original .bin layout
    pickled = tmp_path / "ip-adapter.bin"
    torch.save(nested, pickled)
    with pytest.raises(NodegraphError, match="pickle") as info:
        _run_adapter(tmp_path, pickled)
    assert str(pickled) in str(info.value)
    with pytest.raises(InputError, match="pickle"):
        describe_ip_adapter(pickled, None, make_ctx())
    ctx = make_ctx(allow_pickle=True)
    handle = describe_ip_adapter(pickled, None, ctx)
    state = read_adapter(handle, ctx)
    assert state.keys() == nested.keys()
    assert all(torch.equal(state[p][k], nested[p][k]) for p in nested for k in nested[p])
