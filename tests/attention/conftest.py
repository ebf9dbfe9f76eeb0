"""Fixtures of the attention-pack tests: the built-in tiny model and a direct call of the sampling loop.

`sample(positive, conditions=..., ...)` runs `nodegraph_diffusion.sampling.run_loop` (the sampler
node's loop) with a DDIM scheduler on the tiny UNet, so condition tests need no graph; `encode(text)`
gives a `Conditioning` like `diffusion.encode_text`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from nodegraph_diffusion.paths import BUILTIN_DIR

    pipe = StableDiffusionPipeline.from_pretrained(BUILTIN_DIR / "tinyworld", local_files_only=True)
    return {
        "unet": pipe.unet,
        "vae": pipe.vae,
        "text_encoder": pipe.text_encoder,
        "tokenizer": pipe.tokenizer,
        "scheduler_config": DDIMScheduler.from_config(pipe.scheduler.config).config,
    }


@pytest.fixture(scope="session")
def encode(tiny: dict[str, Any]) -> Callable[[str], Any]:
    from nodegraph_diffusion.types import Conditioning

    def run(text: str) -> Any:
        tok = tiny["tokenizer"]
        ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            embeds = tiny["text_encoder"](ids)[0]
        return Conditioning(embeds=embeds, prompt=text, token_ids=tuple(ids[0].tolist()))

    return run


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    from nodegraph.runtime.context import RunContext, RunOptions
    from nodegraph.runtime.residency import ResidencyManager

    run = RunContext(options=RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32"),
                     resources=ResidencyManager(), staging_dir=tmp_path / "staging")
    return run.for_node("test", "test.node")


@pytest.fixture
def sample(tiny: dict[str, Any], encode: Callable[[str], Any], ctx: Any) -> Callable[..., Any]:
    from diffusers import DDIMScheduler

    from nodegraph_diffusion.sampling import LoopInput, draw_noise, make_generator, run_loop

    def run(positive: Any, conditions: tuple[Any, ...] = (), steps: int = 8, seed: int = 3,
            size: int = 64, cfg: float = 7.5, on_step: Callable[[int], None] | None = None) -> Any:
        batch = positive.embeds.shape[0]
        gen = make_generator(seed)
        noise = draw_noise((batch, 4, size // 8, size // 8), gen)
        req = LoopInput(unet=tiny["unet"], scheduler=DDIMScheduler.from_config(tiny["scheduler_config"]),
                        positive=positive.embeds, negative=encode("").embeds, latents=torch.zeros_like(noise),
                        noise=noise, generator=gen, steps=steps, cfg=cfg, conditions=conditions)
        return run_loop(req, ctx, on_step=on_step)

    return run
