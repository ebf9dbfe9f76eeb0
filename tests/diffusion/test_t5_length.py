"""T5's token count (diffusion.encode_text's `t5_max_length`) equals the pipelines' `max_sequence_length`:
SD3 (default 256) and Flux.1 (default 512), prompts truncated below it and padded above it, graph
latents exact vs StableDiffusion3Pipeline / FluxPipeline; out-of-range values and models without T5
fail validation (exit 2) naming the node and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import ModelRef
from nodegraph_diffusion.text_nodes import encode_text

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"  # 10 T5 tokens with its end token


def with_length(tmp_path: Path, graph: str, length: int) -> Path:
    """graphs/GRAPH with `t5_max_length: LENGTH` on every diffusion.encode_text."""
    text = (GRAPHS / graph).read_text()
    for value in ("$prompt", "$negative"):
        old = f'"@model.text_encoder", text: {value}}}'
        assert old in text
        text = text.replace(old, f'"@model.text_encoder", text: {value}, t5_max_length: {length}}}')
    path = tmp_path / f"{length}-{graph}"
    path.write_text(text)
    return path


def run(tmp_path: Path, graph: Path, **params: Any) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(graph, params, options).outputs["latents"]["out"].samples


@pytest.mark.parametrize("length", [4, 300])
def test_sd3_t5_length_equals_max_sequence_length(ctx: Any, length: int) -> None:
    from tests.diffusion.test_sd3 import sd3_pipe

    model = load_model(ctx, ModelRef("builtin:tinysd3"))
    pipe = sd3_pipe()
    cond = encode_text(ctx, model.text_encoder, PROMPT, t5_max_length=length)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, prompt_3=None, device="cpu",
                                                  do_classifier_free_guidance=False,
                                                  max_sequence_length=length)
    assert cond.embeds.shape == (1, 77 + length, 64)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    default = encode_text(ctx, model.text_encoder, PROMPT)
    assert default.embeds.shape == (1, 77 + 256, 64)


def test_sd3_graph_with_a_t5_length_equals_the_pipeline(tmp_path: Path) -> None:
    from tests.diffusion.test_sd3 import sd3_pipe

    ours = run(tmp_path, with_length(tmp_path, "sd35.yaml", 6), steps=2, seed=5, cfg=4.5, negative="blurry")
    latents = sd3_pipe()(PROMPT, negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                         guidance_scale=4.5, max_sequence_length=6, output_type="latent",
                         generator=torch.Generator().manual_seed(5)).images
    assert (ours - latents).abs().max().item() == 0.0
    default = sd3_pipe()(PROMPT, negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                         guidance_scale=4.5, output_type="latent",
                         generator=torch.Generator().manual_seed(5)).images
    assert (ours - default).abs().max().item() > 1e-4  # the length reaches the picture


@pytest.mark.parametrize(("name", "length"), [("tinyflux", 5), ("tinyflux-schnell", 256)])
def test_flux_t5_length_equals_max_sequence_length(ctx: Any, name: str, length: int) -> None:
    from tests.diffusion.test_flux import flux_pipe

    model = load_model(ctx, ModelRef(f"builtin:{name}"))
    cond = encode_text(ctx, model.text_encoder, PROMPT, t5_max_length=length)
    with torch.no_grad():
        embeds, pooled, _ = flux_pipe(name).encode_prompt(PROMPT, prompt_2=None, device="cpu",
                                                          max_sequence_length=length)
    assert cond.embeds.shape[1] == length
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    assert encode_text(ctx, model.text_encoder, PROMPT).embeds.shape[1] == 512


def test_flux_graph_with_a_t5_length_equals_the_pipeline(tmp_path: Path) -> None:
    from tests.diffusion.test_flux import flux_pipe

    ours = run(tmp_path, with_length(tmp_path, "flux.yaml", 7), steps=2, seed=3, guidance=3.5)
    pipe = flux_pipe("tinyflux")
    packed = pipe(PROMPT, height=64, width=64, num_inference_steps=2, guidance_scale=3.5,
                  max_sequence_length=7, output_type="latent",
                  generator=torch.Generator().manual_seed(3)).images
    assert (ours - pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)).abs().max().item() == 0.0


def refused(tmp_path: Path, graph: Path) -> list[Any]:
    """The validation problems of `graph`, after checking `nodegraph run` exits 2 with no traceback and
    writes nothing."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    registry = build_registry()
    with pytest.raises(GraphError) as info:
        load_plan(graph, registry)
    result = CliRunner().invoke(app, ["run", str(graph), "--out", str(tmp_path / "out"), "--no-cache", "-q"],
                                obj={"registry": registry})
    assert result.exit_code == 2, result.output
    assert graph.name in result.output and "t5_max_length" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    return list(info.value.problems)


@pytest.mark.parametrize("length", [0, 513])
def test_an_out_of_range_t5_length_fails_validation(tmp_path: Path, length: int) -> None:
    problems = refused(tmp_path, with_length(tmp_path, "sd35.yaml", length))
    assert {(p.node, p.field) for p in problems} == {("positive", "t5_max_length"),
                                                    ("negative", "t5_max_length")}


def test_a_t5_length_on_a_model_without_t5_fails_validation(tmp_path: Path) -> None:
    problems = refused(tmp_path, with_length(tmp_path, "txt2img.yaml", 77))
    assert {(p.node, p.field) for p in problems} == {("positive", "t5_max_length"),
                                                    ("negative", "t5_max_length")}
    assert all("SD1.x models have no T5 encoder" in str(p) for p in problems), [str(p) for p in problems]
