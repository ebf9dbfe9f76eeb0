"""The shipped flux-dev/-schnell and sd35-medium/-large configs fit the real checkpoints' layouts.

No real file can be written in a test (12 B parameters), so the models are built from the shipped configs
on the meta device (no memory), written in the original single-file names (flow_files.py), and read
back by diffusers' own converters: the keys and shapes must be the model's, and the family must pick
the same config from those names and shapes, as it does for a real download.
"""

from __future__ import annotations

import json

import pytest
import torch
from nodegraph_diffusion.families import file_family
from nodegraph_diffusion.loading import CONFIGS_DIR
from nodegraph_diffusion.vae_files import vae_choices

from tests.diffusion.flow_files import flux_transformer_to_bfl, sd3_transformer_to_original, vae_to_original


def _meta_model(cls_name: str, config: str, component: str) -> torch.nn.Module:
    import diffusers

    cls = getattr(diffusers, cls_name)
    with torch.device("meta"):
        return cls.from_config(json.loads((CONFIGS_DIR / config / component / "config.json").read_text()))


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("config", ["sd35-medium", "sd35-large"])
def test_sd35_configs_read_the_original_mmdit_layout(config: str) -> None:
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    model = _meta_model("SD3Transformer2DModel", config, "transformer")
    state = dict(model.state_dict())
    original = {"model.diffusion_model." + k: v
                for k, v in sd3_transformer_to_original(state, model.config.num_layers).items()}
    original["first_stage_model.encoder.conv_in.weight"] = torch.empty(128, 3, 3, 3, device="meta")
    assert file_family(_shapes(original))[1] == config  # type: ignore[index]
    del original["first_stage_model.encoder.conv_in.weight"]
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert _shapes(back) == _shapes(state)


@pytest.mark.parametrize("config", ["flux-dev", "flux-schnell"])
def test_flux_configs_read_comfyui_checkpoints(config: str) -> None:
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    model = _meta_model("FluxTransformer2DModel", config, "transformer")
    state = dict(model.state_dict())
    original = {"model.diffusion_model." + k: v for k, v in flux_transformer_to_bfl(state).items()}
    original["vae.encoder.conv_in.weight"] = torch.empty(128, 3, 3, 3, device="meta")
    assert file_family(_shapes(original))[1] == config  # type: ignore[index]
    del original["vae.encoder.conv_in.weight"]
    back = convert_flux_transformer_checkpoint_to_diffusers(dict(original))
    assert _shapes(back) == _shapes(state)


@pytest.mark.parametrize("config", ["flux-dev", "sd35-medium"])
def test_16_channel_vae_files_are_flux_or_sd3_not_sd1(config: str) -> None:
    vae = _meta_model("AutoencoderKL", config, "vae")
    shapes = _shapes(vae_to_original(dict(vae.state_dict())))
    assert vae_choices(shapes) == (("sd3", "sd35-medium"), ("flux", "flux-dev"))
    sdxl = _meta_model("AutoencoderKL", "sdxl", "vae")
    assert [f for f, _ in vae_choices(_shapes(vae_to_original(dict(sdxl.state_dict()))))] == ["sd1", "sdxl"]
