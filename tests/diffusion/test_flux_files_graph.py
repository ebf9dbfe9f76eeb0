"""graphs/flux_files.yaml: Flux.1 from ComfyUI's separate files, run on tiny files via --set.

It needs `diffusion.load_transformer` (the fp8-gguf branch's transformer-file loader); without it
installed the run test is skipped. Written files: the tiny Flux transformer in BFL layout, its CLIP-L
and T5 as ComfyUI's encoder files, its VAE as BFL's ae.safetensors. Pixels and PNG must equal
FluxPipeline on the tiny model (CPU fp32, max abs 0.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.paths import BUILTIN_DIR
from safetensors.torch import save_file

from nodegraph import Engine, RunOptions
from tests.diffusion.flow_files import encoder_file, flux_transformer_to_bfl, vae_file
from tests.diffusion.test_flux import GRAPHS, PROMPT, flux_pipe, png


def _has_load_transformer() -> bool:
    return "diffusion.load_transformer" in Engine().registry


@pytest.mark.skipif(not _has_load_transformer(), reason="needs diffusion.load_transformer (branch fp8-gguf)")
def test_flux_files_graph_on_tiny_files_equals_pipeline(tmp_path: Path) -> None:
    pipe = flux_pipe("tinyflux")
    transformer = tmp_path / "flux1-tiny.safetensors"
    bfl = flux_transformer_to_bfl(dict(pipe.transformer.state_dict()))
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in bfl.items()}, str(transformer))
    params: dict[str, Any] = {
        "transformer": str(transformer), "config": "tinyflux",
        "clip_l": str(encoder_file(pipe.text_encoder, tmp_path / "clip_l.safetensors")),
        "t5": str(encoder_file(pipe.text_encoder_2, tmp_path / "t5xxl_fp16.safetensors")),
        "ae": str(vae_file(pipe.vae, tmp_path / "ae.safetensors")),
        "t5_tokenizer": str(BUILTIN_DIR / "tinyflux" / "tokenizer_2"), "steps": 3, "seed": 4, "guidance": 4.0}
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    result = Engine().run(GRAPHS / "flux_files.yaml", params, options)
    kwargs: dict[str, Any] = {"height": 64, "width": 64, "num_inference_steps": 3, "guidance_scale": 4.0}
    image = pipe(PROMPT, **kwargs, output_type="pt", generator=torch.Generator().manual_seed(4)).images
    assert (result.outputs["image"]["out"].pixels - image).abs().max().item() == 0.0
    pil = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(4)).images[0]
    assert np.array_equal(png(tmp_path / "flux_files.png"), np.asarray(pil))
