"""Control units on SDXL equal diffusers' SDXL pipelines bit for bit (CPU fp32, builtin:tinyxl).

Several ControlNets (StableDiffusionXLControlNetPipeline with a list of nets), a T2I-Adapter-XL
(StableDiffusionXLAdapterPipeline) and ControlNet + T2I-Adapter together (no pipeline does both: a
loop assembled from the SDXL pipeline's own calls). The control models are random and non-zero
(a fresh ControlNet is an exact no-op), and every test checks that each unit changes the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_core.types import Image
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents, SchedulerSpec

from tests.diffusion.test_sdxl import PROMPT, _input, xl_pipe

STEPS, SEED, CFG = 4, 2, 5.0


@pytest.fixture(scope="module")
def base() -> Any:
    """The tiny SDXL as a pipeline (its components build the other pipelines; none mutates them)."""
    return xl_pipe()


@pytest.fixture(scope="module")
def nets(base: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two perturbed SDXL ControlNets and a T2I-Adapter-XL of the tiny SDXL UNet, saved as diffusers folders."""
    from nodegraph_control.tiny_control import build_tiny_adapter_xl, build_tiny_controlnet

    root = tmp_path_factory.mktemp("xl-control")
    models = {"cn-a": build_tiny_controlnet(base.unet, seed=3), "cn-b": build_tiny_controlnet(base.unet, seed=5),
              "adapter": build_tiny_adapter_xl(base.unet, seed=7)}
    for name, model in models.items():
        model.save_pretrained(root / name, safe_serialization=True)
    return {name: root / name for name in models}


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
    pipe = cls(**parts, **models)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(SchedulerSpec("default", tuple(sorted(dict(base.scheduler.config).items()))))
    return pipe


def theirs(pipe: Any, **kwargs: Any) -> torch.Tensor:
    return pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=STEPS, guidance_scale=CFG,
                output_type="latent", generator=torch.Generator().manual_seed(SEED), **kwargs).images


def test_several_sdxl_controlnets_equal_multicontrolnet_pipeline(make_ctx, base, nets):
    from diffusers import StableDiffusionXLControlNetPipeline
    from nodegraph_control.nodes import controlnet, load_controlnet

    ctx = make_ctx()
    first, second = pixels(1), scene()
    units = [controlnet(load_controlnet(ctx, str(nets["cn-a"])), Image(first), strength=0.9, start=0.0, end=0.7),
             controlnet(load_controlnet(ctx, str(nets["cn-b"])), Image(second), strength=1.3, start=0.3, end=1.0)]
    both = ours(ctx, units)
    pipe = pipeline(StableDiffusionXLControlNetPipeline, base,
                    controlnet=[loaded("controlnet", nets["cn-a"]), loaded("controlnet", nets["cn-b"])])
    reference = theirs(pipe, image=[first, second], controlnet_conditioning_scale=[0.9, 1.3],
                       control_guidance_start=[0.0, 0.3], control_guidance_end=[0.7, 1.0])
    assert (both - reference).abs().max().item() == 0.0
    assert not torch.equal(both, ours(ctx, units[:1]))  # each net acts
    assert not torch.equal(both, ours(ctx, units[1:]))


def test_t2i_adapter_xl_equals_sdxl_adapter_pipeline(make_ctx, base, nets):
    from diffusers import StableDiffusionXLAdapterPipeline
    from nodegraph_control.nodes import load_t2i_adapter, t2i_adapter

    ctx = make_ctx()
    image = pixels(4)
    handle = load_t2i_adapter(ctx, str(nets["adapter"]))
    unit = t2i_adapter(handle, Image(image), weight=0.7, end=0.5)
    mine = ours(ctx, [unit])
    pipe = pipeline(StableDiffusionXLAdapterPipeline, base, adapter=loaded("t2i_adapter", nets["adapter"]))
    reference = theirs(pipe, image=image, adapter_conditioning_scale=0.7, adapter_conditioning_factor=0.5)
    assert (mine - reference).abs().max().item() == 0.0
    plain = ours(ctx, [])
    assert (mine - plain).abs().max().item() > 1e-3  # the adapter acts
    full = ours(ctx, [t2i_adapter(handle, Image(image), weight=0.7)])
    assert not torch.equal(full, mine)  # `end` (adapter_conditioning_factor) limits its steps
    assert (full - theirs(pipe, image=image, adapter_conditioning_scale=0.7)).abs().max().item() == 0.0
