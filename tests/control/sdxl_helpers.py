"""Helpers of the SDXL control tests: our sampler and the SDXL pipelines on the same tiny SDXL.

- `ours(ctx, units)`: builtin:tinyxl through our nodes (load_model, encode_text, sample) with units.
- `pipeline(cls, base, **models)`: an SDXL pipeline class built of `base`'s components (the tiny SDXL
  pipeline fixture `xl_base`), `models` added or replacing, with our scheduler of the same config.
- `theirs(pipe, **kwargs)`: that pipeline's latents on the same prompt, size, steps, cfg and seed.
- `loaded(kind, folder)`: a control model as our loader reads it (weights in own storage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents, SchedulerSpec

from tests.diffusion.test_sdxl import PROMPT, _input  # noqa: F401 (PROMPT: re-exported)

STEPS, SEED, CFG = 4, 2, 5.0


def loaded(kind: str, folder: Path) -> Any:
    """A control model as our loader reads it (own storage: the same kernels' alignment as ours)."""
    from diffusers import ControlNetModel, T2IAdapter
    from nodegraph_diffusion.loading import own_storage

    cls = ControlNetModel if kind == "controlnet" else T2IAdapter
    return own_storage(cls.from_pretrained(folder, local_files_only=True).eval())


def pixels(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def scene() -> torch.Tensor:
    return torch.from_numpy(np.array(_input("scene_64.png", "RGB"))).permute(2, 0, 1)[None] / 255.0


def ours(ctx: Any, units: list[Any]) -> torch.Tensor:
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    positive = encode_text(ctx, model.text_encoder, PROMPT)
    negative = encode_text(ctx, model.text_encoder, "")
    return sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(1, 4, 8, 8)), negative,
                  seed=SEED, steps=STEPS, cfg=CFG, conditions=units).samples


def pipeline(cls: Any, base: Any, **models: Any) -> Any:
    parts = {k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")}
    pipe = cls(**{**parts, **models})
    pipe.set_progress_bar_config(disable=True)
    config = tuple(sorted(dict(base.scheduler.config).items()))
    pipe.scheduler = make_scheduler(SchedulerSpec("default", config))
    return pipe


def theirs(pipe: Any, **kwargs: Any) -> torch.Tensor:
    return pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=STEPS,
                guidance_scale=CFG, output_type="latent", generator=torch.Generator().manual_seed(SEED),
                **kwargs).images
