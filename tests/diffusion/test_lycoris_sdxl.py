"""LyCORIS LoHa / LoKr files on SDXL (builtin:tinyxl) == StableDiffusionXLPipeline with ΔW merged by hand.

The files are written by the test in the Kohya layout SDXL files use (lycoris_files.py with
xl_lora_files.kohya_xl_name): UNet layers under their original (SGM) block names, resnet layers by
their original names too (`in_layers_2` = conv1, `skip_connection` = conv_shortcut), both text
encoders (`lora_te1_`, `lora_te2_`). As in test_lycoris.py, peft computes x·W + x·ΔW and the
reference x·(W + ΔW): equal within fp32 rounding (measured on the 64x64 image: max abs 6.0e-7 LoHa,
7.7e-7 LoKr; the bound is 1e-5), while the files change the image by 0.015 and 0.026.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lycoris_files import merge, write_loha, write_lokr
from xl_lora_files import kohya_xl_name, xl_pipe

from nodegraph import Engine, RunOptions

GRAPH = Path(__file__).resolve().parents[2] / "graphs" / "lora.yaml"
PROMPT = "a person in a red shirt, green background"
TOLERANCE = 1e-5
XL_LAYERS = {
    "unet": (
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",  # Linear, cross-attention 64 -> 64
        "down_blocks.1.attentions.0.proj_in",  # Linear (use_linear_projection)
        "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
        "up_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q",
        "down_blocks.0.resnets.0.conv1",  # 3x3 Conv2d: SGM input_blocks_1_0_in_layers_2
        "down_blocks.1.resnets.0.conv_shortcut",  # 1x1 Conv2d: SGM input_blocks_3_0_skip_connection
        "mid_block.resnets.1.conv2",  # SGM middle_block_2_out_layers_3
    ),
    "text_encoder": ("encoder.layers.0.self_attn.q_proj", "encoder.layers.2.self_attn.out_proj"),
    "text_encoder_2": ("text_model.encoder.layers.1.self_attn.k_proj",
                       "text_model.encoder.layers.0.self_attn.v_proj"),
}


def parts(pipe: Any) -> dict[str, Any]:
    return {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}


def pixels(pipe: Any) -> torch.Tensor:
    return pipe(PROMPT, negative_prompt="", num_inference_steps=3, guidance_scale=3.0, height=64, width=64,
                generator=torch.Generator().manual_seed(7), output_type="pt").images


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_sdxl_lycoris_file_equals_merged_delta(kind: str, tmp_path: Path) -> None:
    pipe = xl_pipe("euler")
    file = tmp_path / f"xl_{kind}.safetensors"
    write = write_loha if kind == "loha" else write_lokr
    deltas = write(file, parts(pipe), seed=3, layers=XL_LAYERS, name=kohya_xl_name)
    engine = Engine(cache_mb=256)
    params = {"model": "builtin:tinyxl", "lora": str(file), "lora_weight": 0.7, "steps": 3, "cfg": 3.0,
              "seed": 7, "scheduler": "euler"}
    options = RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)
    ours = engine.run(GRAPH, params, options=options).outputs["image"]["out"].pixels
    base = pixels(pipe)
    merge(parts(pipe), deltas, 0.7)
    theirs = pixels(pipe)
    assert (ours - theirs).abs().max().item() < TOLERANCE
    assert (ours - base).abs().max().item() > 100 * TOLERANCE  # the file acts
    off = engine.run(GRAPH, {**params, "lora_weight": 0.0}, options=options).outputs["image"]["out"].pixels
    assert torch.equal(off, base)  # weight 0 unloads exactly
