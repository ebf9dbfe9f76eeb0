"""graphs/sdxl_multi_condition.yaml (ControlNet + T2I-Adapter-XL + IP-Adapter on SDXL) through the engine.

No diffusers pipeline runs all three; a weight of 0 adds exact zeros, so with the adapter off the graph
must give StableDiffusionXLControlNetPipeline + load_ip_adapter's pixels, and with the ControlNet and
IP-Adapter off StableDiffusionXLAdapterPipeline's; all three on differs from both.
(tests/control/test_sdxl_control.py checks ControlNet + adapter together against a reference loop.)
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_control.tiny_ip_adapter import XL_NAME, XL_WEIGHT_NAME
from nodegraph_diffusion.paths import BUILTIN_DIR
from nodegraph_diffusion.schedulers import make_scheduler
from nodegraph_diffusion.types import SchedulerSpec

from nodegraph import Engine
from tests.control.sdxl_helpers import PROMPT, loaded, pipeline
from tests.control.test_control_graphs import GRAPHS, options, png
from tests.diffusion.test_sdxl import _input

GRAPH = GRAPHS / "sdxl_multi_condition.yaml"
# a weak ControlNet: the tiny random one saturates the tiny UNet at the graph's default (the other two
# conditions would move the result by ~1e-4 only)
FAST = {"steps": 4, "seed": 5, "controlnet_strength": 0.05}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The graph with all conditions, with the adapter off, with the ControlNet and IP-Adapter off."""
    engine, root = Engine(), tmp_path_factory.mktemp("sdxl-multi")
    settings = {"all": {}, "no_adapter": {"adapter_weight": 0.0},
                "adapter_only": {"controlnet_strength": 0.0, "ip_scale": 0.0}}
    return {name: (engine.run(GRAPH, {**FAST, **more}, options(root / name)), root / name)
            for name, more in settings.items()}


def call(pipe: Any, **kwargs: Any) -> Any:
    config = tuple(sorted(dict(pipe.scheduler.config).items()))
    pipe.scheduler = make_scheduler(SchedulerSpec("euler", config))
    args = {"negative_prompt": "", "height": 64, "width": 64, "num_inference_steps": 4, "guidance_scale": 5.0}
    latents = pipe(PROMPT, **args, **kwargs, output_type="latent",
                   generator=torch.Generator().manual_seed(5)).images
    image = pipe(PROMPT, **args, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    return latents, np.asarray(image)


def test_without_adapter_equals_controlnet_pipeline_with_ip_adapter(runs, xl_base):
    from diffusers import StableDiffusionXLControlNetPipeline

    result, folder = runs["no_adapter"]
    pipe = pipeline(StableDiffusionXLControlNetPipeline, xl_base, unet=copy.deepcopy(xl_base.unet),
                    controlnet=loaded("controlnet", BUILTIN_DIR / "tinyxl-edge"))
    pipe.load_ip_adapter(str(BUILTIN_DIR / XL_NAME), subfolder="", weight_name=XL_WEIGHT_NAME,
                         image_encoder_folder="image_encoder", local_files_only=True)
    pipe.set_ip_adapter_scale(0.6)
    latents, image = call(pipe, image=result.outputs["edges"]["out"].pixels,
                          controlnet_conditioning_scale=0.05, ip_adapter_image=_input("scene_64.png", "RGB"))
    assert (result.outputs["latents"]["out"].samples - latents).abs().max().item() == 0.0
    assert np.array_equal(png(folder / "sdxl_multi_condition.png"), image)


def test_adapter_alone_equals_sdxl_adapter_pipeline(runs, xl_base):
    from diffusers import StableDiffusionXLAdapterPipeline

    result, folder = runs["adapter_only"]
    pipe = pipeline(StableDiffusionXLAdapterPipeline, xl_base,
                    adapter=loaded("t2i_adapter", BUILTIN_DIR / "tinyxl-adapter"))
    latents, image = call(pipe, image=result.outputs["edges"]["out"].pixels, adapter_conditioning_scale=0.8)
    assert (result.outputs["latents"]["out"].samples - latents).abs().max().item() == 0.0
    assert np.array_equal(png(folder / "sdxl_multi_condition.png"), image)


def test_all_three_act_together(runs):
    every = runs["all"][0].outputs["latents"]["out"].samples
    for name in ("no_adapter", "adapter_only"):
        assert (every - runs[name][0].outputs["latents"]["out"].samples).abs().max().item() > 1e-3
