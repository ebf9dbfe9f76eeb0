"""LyCORIS LoHa / LoKr files through graphs == the pipeline with ΔW merged by hand (LyCORIS formulas).

Files are written by the test (lycoris_files.py) in Kohya naming with random non-zero factors on
UNet Linear, 1x1 and 3x3 Conv2d layers and text-encoder Linear layers. peft computes the layers'
output unmerged (x·W + x·ΔW), the reference merges (x·(W + ΔW)): they agree within fp32 rounding
(measured on the final 64x64 image: max abs difference 4.2e-6 to 7.9e-6; the bound below is 1e-4),
while the files change the image by 0.73 to 0.83, and a LoKr read with peft's alpha / r where LyCORIS
uses scale 1 is off by 0.77.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lycoris_files import TE_LAYERS, merge, write_loha, write_lokr

from nodegraph.api import InputError
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine

GRAPH = Path(__file__).parents[2] / "graphs" / "lora.yaml"
PROMPT = "a person in a red shirt, green background"
TOLERANCE = 1e-4

STACKED = """\
version: 1
params:
  first:  {type: str}
  second: {type: str}
  w1:     {type: float, default: 1.0}
  w2:     {type: float, default: 1.0}
nodes:
  model:     {type: diffusion.load_model, path: "builtin:tinyworld"}
  a:         {type: diffusion.load_lora, unet: "@model.unet", text_encoder: "@model.text_encoder",
              path: $first, unet_weight: $w1, text_encoder_weight: $w1}
  b:         {type: diffusion.load_lora, unet: "@a.unet", text_encoder: "@a.text_encoder", path: $second,
              unet_weight: $w2, text_encoder_weight: $w2}
  positive:  {type: diffusion.encode_text, encoder: "@b.text_encoder", text: "PROMPT"}
  negative:  {type: diffusion.encode_text, encoder: "@b.text_encoder", text: ""}
  empty:     {type: diffusion.empty_latents, width: 64, height: 64}
  scheduler: {type: diffusion.scheduler, model_scheduler: "@model.scheduler", name: pndm}
  latents:   {type: diffusion.sample, unet: "@b.unet", scheduler: "@scheduler", positive: "@positive",
              negative: "@negative", latents: "@empty", seed: 5, steps: 4, cfg: 3.0}
  image:     {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
""".replace("PROMPT", PROMPT)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(cache_mb=256)


def options(tmp_path: Path) -> RunOptions:
    return RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)


def run(engine: Engine, tmp_path: Path, lora: Path, weight: float, seed: int = 7) -> Any:
    params = {"steps": 4, "scheduler": "pndm", "lora": str(lora), "lora_weight": weight, "seed": seed}
    return engine.run(GRAPH, params, options=options(tmp_path))


def pipeline_image(pipe: Any, seed: int) -> torch.Tensor:
    return pipe(PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=3.0, height=64, width=64,
                generator=torch.Generator().manual_seed(seed), output_type="pt").images


def parts(pipe: Any) -> dict[str, Any]:
    return {"unet": pipe.unet, "text_encoder": pipe.text_encoder}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_file_equals_merged_delta(kind: str, engine: Engine, tmp_path: Path, tiny_pipe: Any) -> None:
    file = tmp_path / f"{kind}.safetensors"
    if kind == "loha":
        deltas = write_loha(file, parts(tiny_pipe), seed=1)
    else:  # one layer with both factors full: LyCORIS scale 1, whatever alpha says
        deltas = write_lokr(file, parts(tiny_pipe), seed=2, full=(TE_LAYERS[0],))
    base = pipeline_image(tiny_pipe, 7)
    ours = run(engine, tmp_path, file, 0.7).outputs["image"]["out"].pixels
    merge(parts(tiny_pipe), deltas, 0.7)
    theirs = pipeline_image(tiny_pipe, 7)
    assert max_diff(ours, theirs) < TOLERANCE
    assert max_diff(ours, base) > 100 * TOLERANCE  # the file acts
    # weight 0 unloads exactly: the base image bit for bit, and the base model was loaded once
    off = run(engine, tmp_path, file, 0.0).outputs["image"]["out"].pixels
    assert max_diff(off, base) == 0.0


def test_lokr_both_full_factors_use_scale_one(engine: Engine, tmp_path: Path, tiny_pipe: Any) -> None:
    """Reading alpha/r for a both-full layer (what peft would do unadjusted) gives a visibly wrong image."""
    file = tmp_path / "lokr_full.safetensors"
    deltas = write_lokr(file, {"text_encoder": tiny_pipe.text_encoder}, seed=3, alpha=2.0, full=TE_LAYERS)
    ours = run(engine, tmp_path, file, 1.0).outputs["image"]["out"].pixels
    merge(parts(tiny_pipe), deltas, 1.0)
    assert max_diff(ours, pipeline_image(tiny_pipe, 7)) < TOLERANCE


def test_stacked_loha_and_lokr_with_weights(engine: Engine, tmp_path: Path, tiny_pipe: Any) -> None:
    graph = tmp_path / "stacked.yaml"
    graph.write_text(STACKED)
    loha, lokr = tmp_path / "a_loha.safetensors", tmp_path / "b_lokr.safetensors"
    d_loha = write_loha(loha, parts(tiny_pipe), seed=4)
    d_lokr = write_lokr(lokr, parts(tiny_pipe), seed=5)
    params = {"first": str(loha), "second": str(lokr)}
    first = engine.run(graph, {**params, "w1": 0.6, "w2": -0.5}, options=options(tmp_path))
    again = engine.run(graph, {**params, "w1": 0.3, "w2": 0.9}, options=options(tmp_path))
    fp = first.outputs["model"]["unet"].source.fingerprint
    assert engine.resources.load_count(f"{fp}:unet") == 1  # weights changed, base not reloaded
    assert engine.resources.load_count(f"{fp}:text_encoder") == 1
    merge(parts(tiny_pipe), d_loha, 0.6)
    merge(parts(tiny_pipe), d_lokr, -0.5)
    assert max_diff(first.outputs["image"]["out"].pixels, pipeline_image(tiny_pipe, 5)) < TOLERANCE
    merge(parts(tiny_pipe), d_loha, 0.3 - 0.6)
    merge(parts(tiny_pipe), d_lokr, 0.9 + 0.5)
    assert max_diff(again.outputs["image"]["out"].pixels, pipeline_image(tiny_pipe, 5)) < TOLERANCE


@pytest.mark.parametrize("loha_first", [False, True])
def test_plain_lora_and_loha_stack(loha_first: bool, tmp_path: Path, tiny_pipe: Any,
                                   style_lora: Path) -> None:
    """Either order on one convolution (the style LoRA patches resnet convs too); a fresh engine, so the
    adapters are loaded in the chain's order (peft's LoRA wrapping a LoHa conv needed a fix)."""
    graph = tmp_path / "stacked.yaml"
    graph.write_text(STACKED)
    loha = tmp_path / "loha.safetensors"
    deltas = write_loha(loha, parts(tiny_pipe), seed=8)
    chain = {"first": str(loha), "second": str(style_lora), "w1": 0.5, "w2": 0.8} if loha_first else {
        "first": str(style_lora), "second": str(loha), "w1": 0.8, "w2": 0.5}
    result = Engine(cache_mb=64).run(graph, chain, options=options(tmp_path))
    tiny_pipe.load_lora_weights(str(style_lora), adapter_name="style")
    tiny_pipe.set_adapters(["style"], [0.8])
    merge(parts(tiny_pipe), deltas, 0.5)  # into the base weights under the LoRA layers
    assert max_diff(result.outputs["image"]["out"].pixels, pipeline_image(tiny_pipe, 5)) < TOLERANCE


def test_bad_lycoris_files_are_clear_errors(tmp_path: Path, tiny_pipe: Any) -> None:
    from nodegraph_diffusion.lycoris import load_lycoris_adapter
    from safetensors.torch import load_file, save_file

    file = tmp_path / "loha.safetensors"
    write_loha(file, {"unet": tiny_pipe.unet}, seed=6)
    state = load_file(str(file))
    broken = {k: v for k, v in state.items() if not k.endswith("hada_w2_b")}
    with pytest.raises(InputError, match="lacks hada_w2_b"):
        load_lycoris_adapter(tiny_pipe.unet, broken, "unet", "x", file)
    alien = {k.replace("down_blocks_0", "down_blocks_9"): v for k, v in state.items()}
    with pytest.raises(InputError, match="names no layer"):
        load_lycoris_adapter(tiny_pipe.unet, alien, "unet", "y", file)
    tucker = {**state, next(iter(state)).rsplit(".", 1)[0] + ".hada_t1": torch.zeros(2, 2, 3, 3)}
    with pytest.raises(InputError, match="Tucker"):
        load_lycoris_adapter(tiny_pipe.unet, tucker, "unet", "z", file)
    assert not load_lycoris_adapter(tiny_pipe.text_encoder, state, "text_encoder", "w", file)  # no TE layers
    save_file(state, str(file))
