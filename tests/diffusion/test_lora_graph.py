"""graphs/lora.yaml end to end == StableDiffusionPipeline + load_lora_weights + set_adapters, same seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine

GRAPH = Path(__file__).parents[2] / "graphs" / "lora.yaml"
PROMPT = "a person in a red shirt, green background"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(cache_mb=256)


def run(engine: Engine, tmp_path: Path, **overrides: Any) -> Any:
    params = {"steps": 4, "scheduler": "pndm", **overrides}  # the pipeline's (the model's own) scheduler
    options = RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)
    return engine.run(GRAPH, params, options=options)


def pipeline_image(pipe: Any, seed: int) -> torch.Tensor:
    return pipe(PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=3.0, height=64, width=64,
                generator=torch.Generator().manual_seed(seed), output_type="pt").images


def test_lora_graph_equals_pipeline(engine: Engine, tmp_path: Path, tiny_pipe: Any, style_lora: Path) -> None:
    result = run(engine, tmp_path, lora_weight=0.8, seed=7)
    ours = result.outputs["image"]["out"].pixels
    tiny_pipe.load_lora_weights(str(style_lora), adapter_name="style")
    tiny_pipe.set_adapters(["style"], [0.8])
    theirs = pipeline_image(tiny_pipe, 7)
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    assert (ours - theirs).abs().max().item() == 0.0
    tiny_pipe.disable_lora()
    assert (ours - pipeline_image(tiny_pipe, 7)).abs().max().item() > 0  # the LoRA acts


def test_weight_change_reruns_lora_nodes_only(engine: Engine, tmp_path: Path, tiny_pipe: Any) -> None:
    first = run(engine, tmp_path, lora_weight=0.5, seed=3)
    second = run(engine, tmp_path, lora_weight=0.0, seed=3)
    assert "model" in second.cached and "empty" in second.cached
    assert {"styled", "positive", "latents", "image"} <= set(second.executed)
    fp = first.outputs["model"]["unet"].source.fingerprint
    assert engine.resources.load_count(f"{fp}:unet") == 1
    assert engine.resources.load_count(f"{fp}:text_encoder") == 1
    base = pipeline_image(tiny_pipe, 3)
    assert (second.outputs["image"]["out"].pixels - base).abs().max().item() == 0.0  # weight 0 = base
    assert not torch.equal(first.outputs["image"]["out"].pixels, base)
