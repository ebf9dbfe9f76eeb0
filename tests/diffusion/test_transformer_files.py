"""diffusion.load_transformer (transformer_files.py): Flux.1 transformer-only files in BFL/ComfyUI and
diffusers layout, fp8-stored and GGUF-quantized, through graphs/flux_gguf.yaml.

Exact where the weights are the same: a BFL-layout file gives FluxPipeline's pixels with the original
transformer; fp8 and GGUF files give the pixels of FluxPipeline with a transformer diffusers itself loaded
from a diffusers-layout copy of the same stored weights (layerwise casting / the GGUF quantizer). Against
the original float32 transformer they are within bounds measured here (see BOUNDS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from run_helpers import cpu_options, png_pixels
from transformer_file_writers import (
    fp8,
    sd3_to_stability,
    tiny_transformer,
    to_bfl,
    write_gguf,
    write_safetensors,
)

from nodegraph import Engine

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"
STEPS, SEED, GUIDANCE = 3, 5, 3.5
COMFY = "model.diffusion_model."

# The documented tolerance of stored weights vs builtin:tinyflux's float32 transformer: (latents max
# abs, pixel max abs in 0..255), 3 steps at 64x64, seed 5, guidance 3.5. Measured on CPU fp32
# (diffusers 0.42.1, torch 2.13, gguf 0.19): fp8 e4m3fn 0.0279 / 2, Q8_0 0.00513 / 1, Q4_0 0.108 / 5
# (latents of magnitude ~2); the bounds are those, rounded up by under 10% for other CPUs' summation
# orders. fp8 keeps 3 mantissa bits of each weight; Q8_0 8 bits per value with one scale per 32; Q4_0 4.
# At a bfloat16 run (same graph, file vs the plain file, both bf16; measured once, not asserted: bf16
# runs are not compared with the pipeline here): fp8 0.0313 / 3, Q8_0 0.0234 / 3, Q4_0 0.107 / 6.
BOUNDS = {"fp8": (0.03, 2), "Q8_0": (0.0055, 1), "Q4_0": (0.115, 5)}


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny transformer as the files people download: BFL (ComfyUI-prefixed), fp8 and GGUF copies,
    each in BFL and in diffusers layout."""
    root = tmp_path_factory.mktemp("transformer_files")
    state = {k: v.contiguous() for k, v in tiny_transformer().state_dict().items()}
    bfl = to_bfl(state)
    out = {
        "bfl": write_safetensors(root / "flux1-tiny.safetensors", to_bfl(state, COMFY)),
        "diffusers": write_safetensors(root / "tiny-diffusers.safetensors", state),
        "fp8": write_safetensors(root / "flux1-tiny-fp8.safetensors", fp8(bfl)),
        "fp8-diffusers": write_safetensors(root / "tiny-diffusers-fp8.safetensors", fp8(state)),
    }
    for quant in ("Q8_0", "Q4_0"):
        out[quant] = write_gguf(root / f"flux1-tiny-{quant}.gguf", bfl, quant)
        out[f"{quant}-diffusers"] = write_gguf(root / f"tiny-diffusers-{quant}.gguf", state, quant)
    return out


def reference_pipe(transformer: Any = None) -> Any:
    from diffusers import FluxPipeline
    from nodegraph_diffusion.owned import own_storage
    from nodegraph_diffusion.paths import BUILTIN_DIR

    pipe = FluxPipeline.from_pretrained(BUILTIN_DIR / "tinyflux", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if transformer is not None:
        pipe.transformer = transformer
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    return pipe


def diffusers_loaded(file: Path, kind: str) -> Any:
    """The transformer as diffusers loads the file itself (the reference for stored weights)."""
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
    from nodegraph_diffusion.paths import BUILTIN_DIR

    kwargs: dict[str, Any] = {"config": str(BUILTIN_DIR / "tinyflux"), "subfolder": "transformer",
                              "local_files_only": True, "torch_dtype": torch.float32}
    if kind.startswith("Q"):
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=torch.float32)
    model = FluxTransformer2DModel.from_single_file(str(file), **kwargs)
    if kind == "fp8":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    return model.eval()


def pipe_outputs(pipe: Any) -> tuple[torch.Tensor, np.ndarray]:
    kwargs = {"height": 64, "width": 64, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE}
    generator = torch.Generator().manual_seed(SEED)
    packed = pipe(PROMPT, **kwargs, output_type="latent", generator=generator).images
    latents = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    image = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(SEED)).images[0]
    return latents, np.asarray(image)


def run_graph(tmp_path: Path, transformer: Path, **params: Any) -> tuple[torch.Tensor, np.ndarray]:
    params = {"transformer": str(transformer), "steps": STEPS, "seed": SEED, "guidance": GUIDANCE,
              "prompt": PROMPT, **params}
    result = Engine().run(GRAPHS / "flux_gguf.yaml", params, cpu_options(tmp_path))
    return result.outputs["latents"]["out"].samples, png_pixels(tmp_path / "flux_gguf.png")


@pytest.fixture(scope="session")
def original() -> tuple[torch.Tensor, np.ndarray]:
    return pipe_outputs(reference_pipe())


@pytest.mark.parametrize("kind", ["bfl", "diffusers"])
def test_plain_file_equals_pipeline_with_original_transformer(tmp_path: Path, files: dict[str, Path],
                                                               original: Any, kind: str) -> None:
    latents, pixels = run_graph(tmp_path, files[kind])
    assert (latents - original[0]).abs().max().item() == 0.0
    assert np.array_equal(pixels, original[1])


@pytest.mark.slow  # ~5-7 s each: three pipeline runs and two graph runs
@pytest.mark.parametrize("kind", ["fp8", "Q8_0", "Q4_0"])
def test_stored_file_equals_pipeline_with_diffusers_loaded_transformer(
        tmp_path: Path, files: dict[str, Path], original: Any, kind: str) -> None:
    reference = pipe_outputs(reference_pipe(diffusers_loaded(files[f"{kind}-diffusers"], kind)))
    for layout in (kind, f"{kind}-diffusers"):  # BFL layout and diffusers layout: the same stored weights
        latents, pixels = run_graph(tmp_path / layout, files[layout])
        assert (latents - reference[0]).abs().max().item() == 0.0, layout
        assert np.array_equal(pixels, reference[1]), layout
    latent_gap = (reference[0] - original[0]).abs().max().item()
    pixel_gap = int(np.abs(reference[1].astype(int) - original[1].astype(int)).max())
    print(f"{kind} vs float32 original: latents max abs {latent_gap:.6g}, pixels max abs {pixel_gap}")
    assert latent_gap > 0  # the storage does act: the bound is not vacuous
    assert latent_gap <= BOUNDS[kind][0] and pixel_gap <= BOUNDS[kind][1]


SD3_GRAPH = """\
version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinysd3"}
  file:     {type: diffusion.load_transformer, path: "%s", unet: "@model.unet"}
  positive: {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}
  negative: {type: diffusion.encode_text, encoder: "@model.text_encoder", text: ""}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64, unet: "@%s"}
  latents:  {type: diffusion.sample, unet: "@%s", scheduler: "@model.scheduler", positive: "@positive",
             negative: "@negative", latents: "@empty", seed: 2, steps: 2, cfg: 4.5}
"""


@pytest.mark.slow  # two SD3 graph runs with CFG
@pytest.mark.parametrize("layout", ["diffusers", "stability"])
def test_sd3_transformer_file_equals_the_models_own(tmp_path: Path, layout: str) -> None:
    """An SD3 transformer file (diffusers layout, or Stability's `joint_blocks` read by diffusers'
    converter) in place of builtin:tinysd3's own transformer: the same latents (the graph with the
    model's own equals StableDiffusion3Pipeline: test_sd3.py)."""
    from diffusers import SD3Transformer2DModel
    from nodegraph_diffusion.paths import BUILTIN_DIR

    model = SD3Transformer2DModel.from_pretrained(BUILTIN_DIR / "tinysd3", subfolder="transformer",
                                                  local_files_only=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "stability":
        state = sd3_to_stability(state, COMFY)
    file = write_safetensors(tmp_path / "sd3-transformer.safetensors", state)

    def latents(unet: str) -> torch.Tensor:
        graph = tmp_path / f"{unet.replace('.', '_')}.yaml"
        graph.write_text(SD3_GRAPH % (file, unet, unet))
        return Engine().run(graph, {}, cpu_options(tmp_path / unet)).outputs["latents"]["out"].samples

    assert torch.equal(latents("file"), latents("model.unet"))


@pytest.mark.slow  # a pipeline and a graph run per case
@pytest.mark.parametrize(("quant", "rest"), [("Q5_1", "F16"), ("BF16", "F32"), ("Q4_1", "F32")])
def test_other_gguf_types_equal_diffusers_loaded_transformer(tmp_path: Path, quant: str, rest: str) -> None:
    """More of the types city96's files use (F16 small tensors, BF16, Q4_1/Q5_1 weights): the graph on
    the BFL-layout file equals FluxPipeline with diffusers' load of the diffusers-layout one. (K-quants,
    Q4_K_S & co., take the same path in diffusers; gguf-py cannot write them, so they are not tested.)"""
    state = {k: v.contiguous() for k, v in tiny_transformer().state_dict().items()}
    ours = write_gguf(tmp_path / f"flux1-tiny-{quant}.gguf", to_bfl(state), quant, rest)
    theirs = write_gguf(tmp_path / f"tiny-diffusers-{quant}.gguf", state, quant, rest)
    pipe = reference_pipe(diffusers_loaded(theirs, "Q"))
    kwargs = {"height": 64, "width": 64, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE}
    generator = torch.Generator().manual_seed(SEED)
    packed = pipe(PROMPT, **kwargs, output_type="latent", generator=generator).images
    latents, _ = run_graph(tmp_path, ours)
    assert (latents - pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)).abs().max().item() == 0.0
