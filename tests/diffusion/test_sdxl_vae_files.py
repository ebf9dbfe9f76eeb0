"""Standalone SDXL VAE files: read with SDXL's config (scaling 0.13025), not SD1.x's (0.18215).

SD1.x's and SDXL's VAEs have the same architecture, so a VAE file alone does not say which it is: the
loader's `family`, or the latents it decodes, decide (nodegraph_diffusion/vae_files.py). The tiny
SDXL's VAE (width 8) is SDXL's alone; the real width (128) is shared and tested with a random VAE of
SDXL's real architecture (83 M parameters, written in fp16 to keep the file at 167 MB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.loading import CONFIGS_DIR
from nodegraph_diffusion.model_nodes import load_model, load_vae
from nodegraph_diffusion.paths import BUILTIN_DIR, VaeRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.single_file import VAE_PREFIX, diffusers_to_original
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents
from nodegraph_diffusion.vae_nodes import vae_decode, vae_encode
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError
from nodegraph_core.types import Image

TINYXL = BUILTIN_DIR / "tinyxl"
PROMPT = "a big red circle in the center, blue background"
GRAPH = """version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinyxl"}
  vae:      {type: diffusion.load_vae, path: "%s"}
  positive: {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "%s"}
  negative: {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "blurry"}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64}
  latents:  {type: diffusion.sample, unet: "@model.unet", scheduler: "@model.scheduler", positive: "@positive",
             negative: "@negative", latents: "@empty", seed: 5, steps: 3, cfg: 5.0}
  image:    {type: diffusion.vae_decode, vae: "@vae", latents: "@latents"}
  save:     {type: core.save_image, image: "@image", path: out.png}
"""


def ldm_vae_state(vae: Any) -> dict[str, torch.Tensor]:
    """The VAE's weights in the original (LDM) layout of sdxl_vae.safetensors: bare keys."""
    state = diffusers_to_original({"unet": {}, "vae": vae.state_dict(), "text_encoder": {}}, {})
    return {k[len(VAE_PREFIX):]: v.contiguous() for k, v in state.items()}


def write_vae(vae: Any, folder: Path, layout: str, dtype: torch.dtype = torch.float32) -> Path:
    """`vae` as an LDM single file, a diffusers-keyed single file, or a diffusers folder (fp16-fix's)."""
    from safetensors.torch import save_file

    if layout == "folder":
        vae.save_pretrained(folder / "vae", safe_serialization=True)
        return folder / "vae"
    state = ldm_vae_state(vae) if layout == "ldm" else dict(vae.state_dict())
    path = folder / f"vae_{layout}.safetensors"
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(path))
    return path


def tinyxl_vae() -> Any:
    from diffusers import AutoencoderKL
    from nodegraph_diffusion.loading import own_storage

    return own_storage(AutoencoderKL.from_pretrained(TINYXL / "vae", local_files_only=True).eval())


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("layout", ["ldm", "diffusers_keys", "folder"])
def test_sdxl_graph_with_a_separate_vae_file_gives_the_pipelines_pixels(tmp_path: Path, layout: str) -> None:
    from diffusers import StableDiffusionXLPipeline

    vae = tinyxl_vae()
    with torch.no_grad():  # another VAE than the model's own, so the test sees which one decodes
        for p in vae.decoder.parameters():
            p.mul_(1.05)
    where = write_vae(vae, tmp_path, layout)
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH % (where, PROMPT))
    options = RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)
    Engine().run(graph, {}, options)
    pipe = StableDiffusionXLPipeline.from_pretrained(TINYXL, local_files_only=True, vae=vae,
                                                     add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    from nodegraph_diffusion.loading import own_storage

    for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    image = pipe(PROMPT, negative_prompt="blurry", height=64, width=64, num_inference_steps=3,
                 guidance_scale=5.0, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "out" / "out.png"), np.asarray(image))


def test_tiny_sdxl_vae_file_is_sdxl_family(ctx: Any, tmp_path: Path) -> None:
    handle = load_vae(ctx, VaeRef(str(write_vae(tinyxl_vae(), tmp_path, "ldm"))))
    assert (handle.source.family, handle.source.base) == ("sdxl", "tinyxl")
    with pytest.raises(InputError, match="family") as err:
        load_vae(ctx, VaeRef(str(write_vae(tinyxl_vae(), tmp_path, "ldm"))), family="sd1")
    assert err.value.field == "family"


@pytest.fixture(scope="module")
def real_width_vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random VAE of SDXL's real architecture (= SD1.x's), as bare-keyed LDM fp16 file, and the
    fp32 module holding the very same (fp16-rounded) weights."""
    from diffusers import AutoencoderKL

    config = AutoencoderKL.load_config(CONFIGS_DIR / "sdxl" / "vae")
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(config).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(p.half().float())
    return vae, write_vae(vae, tmp_path_factory.mktemp("realvae"), "ldm", torch.float16)


def reference_decode(vae: Any, z: torch.Tensor, scaling: float) -> torch.Tensor:
    """What the pipelines do: decode latents / scaling, then VaeImageProcessor's denormalize."""
    with torch.no_grad():
        return (vae.decode(z / scaling, return_dict=False)[0] * 0.5 + 0.5).clamp(0, 1)


def test_real_width_vae_file_decodes_with_its_latents_family(ctx: Any, real_width_vae: tuple[Any, Path]) -> None:
    vae, path = real_width_vae
    handle = load_vae(ctx, VaeRef(str(path)))
    assert handle.source.family == ""  # SD1.x's or SDXL's: the weights cannot tell
    z = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    sdxl = vae_decode(ctx, handle, Latents(z, family="sdxl")).pixels
    assert float((sdxl - reference_decode(vae, z, 0.13025)).abs().max()) == 0.0
    sd1 = vae_decode(ctx, handle, Latents(z, family="sd1")).pixels
    assert float((sd1 - reference_decode(vae, z, 0.18215)).abs().max()) == 0.0
    told = load_vae(ctx, VaeRef(str(path)), family="sdxl")
    assert told.source.family == "sdxl"
    unknown = vae_decode(ctx, told, Latents(z)).pixels  # told: no context needed
    assert torch.equal(unknown, sdxl)


def test_encoding_with_an_open_vae_file_is_refused_by_an_sdxl_sampler(ctx: Any,
                                                                     real_width_vae: tuple[Any, Path]) -> None:
    _, path = real_width_vae
    pixels = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    open_vae = load_vae(ctx, VaeRef(str(path)))
    latents = vae_encode(ctx, open_vae, Image(pixels), seed=1)
    assert latents.family == "sd1"  # read as the first claimant's, and said so on the latents
    told = vae_encode(ctx, load_vae(ctx, VaeRef(str(path)), family="sdxl"), Image(pixels), seed=1)
    assert told.family == "sdxl"
    assert torch.allclose(told.samples / 0.13025, latents.samples / 0.18215, atol=1e-6)
    model = load_model(ctx, "builtin:tinyxl")
    cond = encode_text(ctx, model.text_encoder, PROMPT)
    with pytest.raises(InputError, match="family: sdxl") as err:
        sample(ctx, model.unet, model.scheduler, cond, latents, steps=1, cfg=1.0, denoise=0.5)
    assert err.value.field == "latents"


def test_a_vae_told_its_family_is_checked_at_validation(tmp_path: Path) -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    where = write_vae(tinyxl_vae(), tmp_path, "ldm")
    graph = tmp_path / "g.yaml"
    registry = build_registry()
    for family in ("auto", "sdxl"):
        graph.write_text(GRAPH.replace('path: "%s"}', f'path: "%s", family: {family}}}') % (where, PROMPT))
        load_plan(graph, registry, {})  # SDXL latents into an SDXL (or open) VAE
    sd1 = GRAPH.replace("builtin:tinyxl", "builtin:tinyworld").replace('path: "%s"}', 'path: "%s", family: sdxl}')
    graph.write_text(sd1 % (where, PROMPT))
    with pytest.raises(GraphError, match="'latents' gets SD1.x latents from node 'latents'"):
        load_plan(graph, registry, {})
