"""Flux.1 all-in-one checkpoints (ComfyUI's `flux1-dev-fp8.safetensors` layout) through load_model.

The tiny Flux is written in that layout (flow_files.py: BFL transformer names under
`model.diffusion_model.`, the VAE under `vae.`, CLIP-L and T5 under `text_encoders.`); load_model tells
its family, config and parts, and its text encoders and VAE equal FluxPipeline's exactly. Its
transformer cannot be read back by diffusers: `convert_flux_transformer_checkpoint_to_diffusers` splits
the single blocks' `linear1` at FLUX.1's widths (3072, 12288), so only real-size files convert; the
tiny one is an input error, not a traceback. Real-size detection is shown on files holding only the few
tensors it reads, at their real shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef
from nodegraph_diffusion.text_nodes import encode_text
from safetensors.torch import save_file

from nodegraph.api import InputError
from tests.diffusion.flow_files import flux_all_in_one
from tests.diffusion.test_flux import PROMPT, flux_pipe


@pytest.fixture(scope="module")
def flux() -> Any:
    return flux_pipe("tinyflux")


@pytest.fixture(scope="module")
def checkpoint(flux: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flux_all_in_one(flux.components, tmp_path_factory.mktemp("fluxckpt") / "flux1-tiny.safetensors")


def test_all_in_one_is_tinyflux_and_its_encoders_and_vae_are_the_pipelines(ctx: Any, flux: Any,
                                                                           checkpoint: Path) -> None:
    from nodegraph_diffusion.loading import load_vae

    model = load_model(ctx, ModelRef(str(checkpoint)))
    source = model.unet.source
    assert (source.family, source.format, source.base) == ("flux", "single_file", "tinyflux")
    assert dict(source.parts).keys() == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    cond = encode_text(ctx, model.text_encoder, PROMPT)
    with torch.no_grad():
        embeds, pooled, _ = flux.encode_prompt(PROMPT, prompt_2=None, device="cpu")
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    vae = load_vae(model.vae.source, ctx)
    ours = vae.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in flux.vae.state_dict().items())


def test_tiny_transformer_is_an_input_error_not_a_traceback(ctx: Any, checkpoint: Path) -> None:
    from nodegraph_diffusion.loading import load_unet

    source = load_model(ctx, ModelRef(str(checkpoint))).unet.source
    with pytest.raises(InputError, match="cannot read the Flux.1 denoiser"):
        load_unet(source, ctx)


def _header_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(shape, dtype=torch.float8_e4m3fn) for k, shape in shapes.items()}, str(path))
    return path


REAL = {"model.diffusion_model.img_in.weight": (3072, 64),
        "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": (128,),
        "vae.encoder.conv_in.weight": (128, 3, 3, 3),
        "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight": (8, 768)}
GUIDANCE = {"model.diffusion_model.guidance_in.in_layer.weight": (3072, 256)}


@pytest.mark.parametrize(("shapes", "config"), [({**REAL, **GUIDANCE}, "flux-dev"), (REAL, "flux-schnell")])
def test_real_size_checkpoints_pick_dev_or_schnell(ctx: Any, tmp_path: Path, shapes: dict[str, Any],
                                                   config: str) -> None:
    source = load_model(ctx, ModelRef(str(_header_file(tmp_path / "flux1.safetensors", shapes)))).unet.source
    assert (source.family, source.base) == ("flux", config)
    assert source.config_dir and Path(source.config_dir).name == config


@pytest.mark.parametrize(("shapes", "says"), [
    ({k: v for k, v in REAL.items() if k.startswith("model.")}, "diffusion.load_transformer"),
    ({"img_in.weight": (3072, 64), "double_blocks.0.img_attn.norm.key_norm.scale": (128,)},
     "diffusion.load_transformer"),
    ({**REAL, "model.diffusion_model.img_in.weight": (3072, 384)}, "384 input channels"),
])
def test_files_that_are_no_full_flux_model_say_what_they_are(ctx: Any, tmp_path: Path, shapes: dict[str, Any],
                                                             says: str) -> None:
    with pytest.raises(InputError, match=says) as caught:
        load_model(ctx, ModelRef(str(_header_file(tmp_path / "flux1-dev.safetensors", shapes))))
    assert caught.value.field == "path"
