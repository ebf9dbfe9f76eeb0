"""SD3.5 single files (ComfyUI/Stability layout) through diffusion.load_model: the pipeline's pixels.

The tiny SD3 is written as an all-in-one file in the real layout (flow_files.py) and read back with the
shipped tinysd3 config folder; the graph (graphs/sd35.yaml on the file) must equal
StableDiffusion3Pipeline on the original tiny model, CPU fp32, max abs 0.0. The CLIP-L projection of the
reference is the identity: SD3 checkpoints use CLIP-L's pooled output unprojected and diffusers' reader
sets it so (the real SD3 diffusers repos' CLIP-L projection is the identity too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef

from nodegraph import Engine, RunOptions
from nodegraph.errors import GraphError
from tests.diffusion.flow_files import sd3_all_in_one
from tests.diffusion.test_sd3 import GRAPHS, PROMPT, png, sd3_pipe


def identity_clip_l_pipe() -> Any:
    """The tiny SD3 pipeline with CLIP-L's projection set to the identity (see the module docstring)."""
    pipe = sd3_pipe()
    with torch.no_grad():
        proj = pipe.text_encoder.text_projection.weight
        proj.copy_(torch.eye(proj.shape[0]))
    return pipe


@pytest.fixture(scope="module")
def reference() -> Any:
    return identity_clip_l_pipe()


@pytest.fixture(scope="module")
def files(reference: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sd3files")
    return {"full": sd3_all_in_one(reference.components, root / "sd3.5_tiny_incl_clips_t5.safetensors"),
            "no_t5": sd3_all_in_one(reference.components, root / "sd3.5_tiny_incl_clips.safetensors",
                                    with_t5=False),
            "bare": sd3_all_in_one(reference.components, root / "sd3.5_tiny.safetensors",
                                   with_encoders=False)}


def _run(tmp_path: Path, params: dict[str, Any]) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(GRAPHS / "sd35.yaml", params, options)


def test_all_in_one_file_is_tinysd3_with_its_parts(ctx: Any, files: dict[str, Path]) -> None:
    model = load_model(ctx, ModelRef(str(files["full"])))
    source = model.unet.source
    assert (source.family, source.format, source.base) == ("sd3", "single_file", "tinysd3")
    everything = {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    assert dict(source.parts).keys() == everything
    bare = load_model(ctx, ModelRef(str(files["bare"]))).unet.source
    assert dict(bare.parts).keys() == {"transformer", "vae"}


def test_all_in_one_graph_equals_pipeline(tmp_path: Path, files: dict[str, Path], reference: Any) -> None:
    params = {"model": str(files["full"]), "steps": 3, "seed": 5, "negative": "blurry, green", "cfg": 4.5}
    result = _run(tmp_path, params)
    kwargs = {"negative_prompt": "blurry, green", "height": 64, "width": 64, "num_inference_steps": 3,
              "guidance_scale": 4.5}
    image = reference(PROMPT, **kwargs, output_type="pt", generator=torch.Generator().manual_seed(5)).images
    assert (result.outputs["image"]["out"].pixels - image).abs().max().item() == 0.0
    pil = reference(PROMPT, **kwargs, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(png(tmp_path / "sd35.png"), np.asarray(pil))


def test_all_in_one_without_t5_equals_pipeline_without_t5(tmp_path: Path, files: dict[str, Path],
                                                          reference: Any) -> None:
    from diffusers import StableDiffusion3Pipeline

    result = _run(tmp_path, {"model": str(files["no_t5"]), "steps": 2, "seed": 1, "cfg": 3.0})
    parts = {**reference.components, "text_encoder_3": None, "tokenizer_3": None}
    pipe = StableDiffusion3Pipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=2, guidance_scale=3.0,
                 output_type="pt", generator=torch.Generator().manual_seed(1)).images
    assert (result.outputs["image"]["out"].pixels - image).abs().max().item() == 0.0
    assert not result.outputs["positive"]["out"].embeds[:, 77:].any()  # T5's part: zeros


def test_file_without_text_encoders_is_refused_at_validation(tmp_path: Path, ctx: Any,
                                                             files: dict[str, Path]) -> None:
    """Stability's sd3.5_medium.safetensors holds no text encoder: `nodegraph validate` says where to get
    them; past validation (library use) the encoder's first use says it too."""
    from nodegraph_diffusion.text_nodes import encode_text

    from nodegraph.api import InputError

    with pytest.raises(GraphError, match="node 'positive', field 'encoder'.*holds no text encoder "
                                         r"\(text_encoder, text_encoder_2\): load them with "
                                         "diffusion.load_text_encoders"):
        _run(tmp_path, {"model": str(files["bare"]), "steps": 1})
    model = load_model(ctx, ModelRef(str(files["bare"])))
    with pytest.raises(InputError, match="holds no text encoder \\(CLIP-L\\).*load_text_encoders"):
        encode_text(ctx, model.text_encoder, PROMPT)


def test_cli_refuses_a_transformer_only_file_with_exit_2(tmp_path: Path, files: dict[str, Path]) -> None:
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    bare = {k.removeprefix("model.diffusion_model."): v for k, v in load_file(files["bare"]).items()
            if k.startswith("model.diffusion_model.")}
    save_file(bare, str(tmp_path / "sd3_transformer.safetensors"))
    result = CliRunner().invoke(app, ["run", str(GRAPHS / "sd35.yaml"), "--set",
                                      f"model={tmp_path / 'sd3_transformer.safetensors'}", "--set", "steps=1",
                                      "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    assert result.exit_code == 2, result.output
    assert "diffusion.load_transformer" in result.output and "field 'path'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "sd35.png").exists()
