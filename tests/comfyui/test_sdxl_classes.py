"""CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner: which text reaches which encoder, and the sizes.

ComfyUI's `text_l` feeds CLIP-L and `text_g` OpenCLIP-G; diffusers' SDXL pipeline takes them as
`prompt` and `prompt_2`. The workflow runs on the tiny SDXL base/refiner single files under the names
a workflow uses; the conditioning must equal the pipeline's `encode_prompt(text_l, prompt_2=text_g)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from nodegraph_comfyui import import_workflow

from nodegraph import Engine, RunOptions
from tests.comfyui.test_run import comfy_models  # noqa: F401  (the session fixture)

TEXT_G, TEXT_L = "a big red circle in the center, blue background", "a small green square"


def _workflow(refiner: bool) -> dict[str, Any]:
    ckpt = "sd_xl_refiner_1.0.safetensors" if refiner else "sd_xl_base_1.0.safetensors"
    if refiner:
        pos = {"class_type": "CLIPTextEncodeSDXLRefiner",
               "inputs": {"ascore": 7.5, "width": 96, "height": 80, "text": TEXT_G, "clip": ["4", 1]}}
        neg = {"class_type": "CLIPTextEncodeSDXLRefiner",
               "inputs": {"ascore": 2.0, "width": 64, "height": 64, "text": "", "clip": ["4", 1]}}
    else:
        sizes = {"width": 128, "height": 96, "crop_w": 8, "crop_h": 16, "target_width": 64,
                 "target_height": 48}
        pos = {"class_type": "CLIPTextEncodeSDXL",
               "inputs": {**sizes, "text_g": TEXT_G, "text_l": TEXT_L, "clip": ["4", 1]}}
        neg = {"class_type": "CLIPTextEncodeSDXL",
               "inputs": {**sizes, "text_g": "", "text_l": "", "clip": ["4", 1]}}
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": pos,
        "7": neg,
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "xl", "images": ["8", 0]}},
    }


def _run(tmp_path: Path, models: Path, refiner: bool) -> tuple[dict[str, Any], Any]:
    file = tmp_path / "w.json"
    file.write_text(json.dumps(_workflow(refiner)))
    graph = import_workflow(file)
    result = Engine().run(Engine().load(graph, file=file),
                          options=RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32",
                                             model_dirs=(models,)))
    return graph, result.outputs


def test_sdxl_encode_sends_text_l_to_clip_l_and_text_g_to_clip_g(tmp_path: Path, comfy_models: Path) -> None:  # noqa: F811
    from tests.diffusion.test_sdxl import xl_pipe

    graph, outputs = _run(tmp_path, comfy_models, refiner=False)
    node = graph["nodes"]["positive"]
    assert graph["params"]["prompt"]["default"] == TEXT_G and graph["params"]["prompt_l"]["default"] == TEXT_L
    assert (node["text"], node["text_2"]) == ("$prompt_l", "$prompt")
    assert "text_2" not in graph["nodes"]["negative"]  # one text for both encoders when they are equal
    cond = outputs["positive"]["out"]
    embeds, _, pooled, _ = xl_pipe().encode_prompt(TEXT_L, prompt_2=TEXT_G, device="cpu",
                                                   do_classifier_free_guidance=False)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    micro = dict(cond.micro)  # (height, width) pairs, as the family hands them to the UNet's time ids
    assert micro["original_size"] == (96, 128) and micro["crop"] == (16, 8)
    assert micro["target_size"] == (48, 64)
    assert (tmp_path / "out" / "xl_save.png").is_file()


def test_sdxl_refiner_encode_carries_the_aesthetic_score(tmp_path: Path, comfy_models: Path) -> None:  # noqa: F811
    graph, outputs = _run(tmp_path, comfy_models, refiner=True)
    assert graph["nodes"]["positive"]["aesthetic_score"] == 7.5
    pos, neg = outputs["positive"]["out"], outputs["negative"]["out"]
    assert dict(pos.micro)["aesthetic_score"] == 7.5 and dict(neg.micro)["aesthetic_score"] == 2.0
    assert dict(pos.micro)["original_size"] == (80, 96)
    assert pos.family == "sdxl" and pos.embeds.shape[-1] == 32  # the refiner's one (OpenCLIP-G) encoder
