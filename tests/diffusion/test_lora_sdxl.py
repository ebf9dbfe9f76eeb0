"""LoRA on SDXL (builtin:tinyxl): the graph == StableDiffusionXLPipeline.load_lora_weights, same seed.

The files (xl_lora_files.py) have random non-zero A and B on the UNet and both text encoders; the
Kohya copy names UNet layers in the original SGM blocks, as sd-scripts' SDXL LoRAs do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from xl_lora_files import to_kohya, write_diffusers_lora, xl_pipe

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a person in a red shirt, green background"  # graphs/lora.yaml's default
STEPS, CFG, SEED = 3, 3.0, 7

TWO_LORAS = """version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinyxl"}
  first:    {type: diffusion.load_lora, unet: "@model.unet", text_encoder: "@model.text_encoder",
             path: "FIRST", unet_weight: 0.7, text_encoder_weight: 1.0}
  second:   {type: diffusion.load_lora, unet: "@first.unet", text_encoder: "@first.text_encoder",
             path: "SECOND", unet_weight: -0.4, text_encoder_weight: 0.5}
  positive: {type: diffusion.encode_text, encoder: "@second.text_encoder", text: "PROMPT"}
  negative: {type: diffusion.encode_text, encoder: "@second.text_encoder", text: ""}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64}
  latents:  {type: diffusion.sample, unet: "@second.unet", scheduler: "@model.scheduler",
             positive: "@positive", negative: "@negative", latents: "@empty", seed: 7, steps: 3, cfg: 3.0}
  image:    {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xl_loras")
    first = write_diffusers_lora(root / "xl_a.safetensors", seed=1)
    return {"diffusers": first, "kohya": to_kohya(first, root / "xl_a_kohya.safetensors"),
            "kohya_diffusers_names": to_kohya(first, root / "xl_a_kohya_d.safetensors", sgm=False),
            "second": write_diffusers_lora(root / "xl_b.safetensors", seed=2)}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(cache_mb=256)


def options(tmp_path: Path) -> RunOptions:
    return RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)


def run_lora_graph(engine: Engine, tmp_path: Path, lora: Path, weight: float) -> torch.Tensor:
    params = {"model": "builtin:tinyxl", "lora": str(lora), "lora_weight": weight, "steps": STEPS,
              "cfg": CFG, "seed": SEED, "scheduler": "euler"}
    return engine.run(GRAPHS / "lora.yaml", params, options=options(tmp_path)).outputs["image"]["out"].pixels


def pipe_pixels(pipe: Any) -> torch.Tensor:
    return pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                width=64, generator=torch.Generator().manual_seed(SEED), output_type="pt").images


def test_kohya_sdxl_lora_graph_equals_load_lora_weights(engine: Engine, tmp_path: Path,
                                                         files: dict[str, Path]) -> None:
    keys = load_file(files["kohya"])
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert any(k.startswith("lora_te1_text_model_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_") for k in keys)
    ours = run_lora_graph(engine, tmp_path, files["kohya"], 0.8)
    pipe = xl_pipe("euler")
    base = pipe_pixels(pipe)
    pipe.load_lora_weights(str(files["kohya"]), adapter_name="k")
    pipe.set_adapters(["k"], [0.8])
    assert {len(getattr(pipe, p).peft_config) for p in ("unet", "text_encoder", "text_encoder_2")} == {1}
    theirs = pipe_pixels(pipe)
    assert (ours - base).abs().max().item() > 1e-2  # the LoRA changes the image: the test can fail
    assert (ours - theirs).abs().max().item() == 0.0


@pytest.mark.parametrize("layout", ["diffusers", "kohya", "kohya_diffusers_names"])
def test_both_text_encoders_take_the_lora_like_the_pipeline(ctx: Any, files: dict[str, Path],
                                                             layout: str) -> None:
    """encode_text through the LoRA'd handle == the pipeline's encode_prompt after load_lora_weights;
    both encoders' halves of the embeds and the pooled embeds move."""
    from nodegraph_diffusion.model_nodes import load_lora, load_model
    from nodegraph_diffusion.paths import LoraRef, ModelRef
    from nodegraph_diffusion.text_nodes import encode_text

    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    base = encode_text(ctx, model.text_encoder, PROMPT)
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(files[layout])), 0.5, 0.9)
    ours = encode_text(ctx, patched.text_encoder, PROMPT)
    pipe = xl_pipe()
    pipe.load_lora_weights(str(files[layout]), adapter_name="x")
    pipe.set_adapters(["x"], [{"unet": 0.5, "text_encoder": 0.9, "text_encoder_2": 0.9}])
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(ours.embeds, embeds) and torch.equal(ours.pooled, pooled)
    assert not torch.equal(ours.embeds[..., :32], base.embeds[..., :32])  # text_encoder
    assert not torch.equal(ours.embeds[..., 32:], base.embeds[..., 32:])  # text_encoder_2
    assert not torch.equal(ours.pooled, base.pooled)


def test_layouts_give_the_same_pixels(engine: Engine, tmp_path: Path, files: dict[str, Path]) -> None:
    """The diffusers-layout file and its Kohya copies (SGM and diffusers block names) are one LoRA."""
    kohya = run_lora_graph(engine, tmp_path, files["kohya"], 0.6)
    assert torch.equal(run_lora_graph(engine, tmp_path, files["diffusers"], 0.6), kohya)
    assert torch.equal(run_lora_graph(engine, tmp_path, files["kohya_diffusers_names"], 0.6), kohya)


def test_two_loras_with_weights_equal_pipeline(engine: Engine, tmp_path: Path,
                                               files: dict[str, Path]) -> None:
    graph = tmp_path / "two.yaml"
    graph.write_text(TWO_LORAS.replace("FIRST", str(files["kohya"])).replace("SECOND", str(files["second"]))
                     .replace("PROMPT", PROMPT))
    ours = engine.run(graph, {}, options=options(tmp_path)).outputs["image"]["out"].pixels
    pipe = xl_pipe()  # the graph uses the model's own scheduler
    pipe.load_lora_weights(str(files["kohya"]), adapter_name="a")
    pipe.load_lora_weights(str(files["second"]), adapter_name="b")
    pipe.set_adapters(["a", "b"], [{"unet": 0.7, "text_encoder": 1.0, "text_encoder_2": 1.0},
                                   {"unet": -0.4, "text_encoder": 0.5, "text_encoder_2": 0.5}])
    assert (ours - pipe_pixels(pipe)).abs().max().item() == 0.0
    pipe.set_adapters(["a"], [{"unet": 0.7, "text_encoder": 1.0, "text_encoder_2": 1.0}])
    assert (ours - pipe_pixels(pipe)).abs().max().item() > 1e-3  # the second LoRA acts


def test_removing_the_lora_gives_base_pixels_without_reload(engine: Engine, tmp_path: Path,
                                                           files: dict[str, Path]) -> None:
    with_lora = run_lora_graph(engine, tmp_path, files["kohya"], 1.0)
    params = {"model": "builtin:tinyxl", "prompt": PROMPT, "steps": STEPS, "cfg": CFG, "seed": SEED,
              "scheduler": "euler"}
    result = engine.run(GRAPHS / "sdxl.yaml", params, options=options(tmp_path))  # no LoRA node
    base = pipe_pixels(xl_pipe("euler"))
    assert not torch.equal(with_lora, base)
    assert (result.outputs["image"]["out"].pixels - base).abs().max().item() == 0.0
    assert torch.equal(run_lora_graph(engine, tmp_path, files["kohya"], 0.0), base)  # weight 0 = base
    fp = result.outputs["model"]["unet"].source.fingerprint
    for part in ("unet", "text_encoder", "text_encoder_2"):
        assert engine.resources.stats.loads[f"{fp}:{part}"] == 1, part  # exact key, not a prefix


def test_family_mismatch_fails_validation_naming_node_and_field(tmp_path: Path,
                                                                files: dict[str, Path]) -> None:
    """Told by the LoRA file's header: an SD1 LoRA's 32-wide attn2.to_k on tinyxl's 64-wide UNet, an SDXL
    file's text_encoder_2 / original-layout block names on tinyworld."""
    from nodegraph_diffusion.lora import save_tiny_style_lora
    from nodegraph_diffusion.paths import BUILTIN_DIR

    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    sd1 = save_tiny_style_lora(BUILTIN_DIR / "tinyworld", tmp_path / "sd1-lora")  # attn2.to_k included
    unet_only = tmp_path / "xl_unet_only.safetensors"
    kohya = load_file(files["kohya"])
    save_file({k: v for k, v in kohya.items() if k.startswith("lora_unet_")}, str(unet_only))
    registry = build_registry()
    load_plan(GRAPHS / "lora.yaml", registry, {"model": "builtin:tinyxl", "lora": str(files["kohya"])})
    load_plan(GRAPHS / "lora.yaml", registry, {"model": "builtin:tinyworld", "lora": str(sd1)})
    for model, lora, says in (("builtin:tinyxl", str(sd1), "32-wide text states, this SDXL UNet takes 64"),
                              ("builtin:tinyworld", str(files["kohya"]), "text_encoder_2"),
                              ("builtin:tinyworld", str(files["diffusers"]), "text_encoder_2"),
                              ("builtin:tinyworld", str(unet_only), "input_blocks")):
        with pytest.raises(GraphError) as info:
            load_plan(GRAPHS / "lora.yaml", registry, {"model": model, "lora": lora})
        (problem,) = info.value.problems
        assert (problem.node, problem.field) == ("styled", "path"), str(problem)
        assert says in str(problem) and "'unet' is an" in str(problem) and "node 'model'" in str(problem)


def test_lora_for_other_layers_is_refused_when_it_runs(tmp_path: Path) -> None:
    """The built-in SD1 style LoRA has no attn2.to_k (no width cue) and one text encoder: validation
    cannot tell, the run refuses it (exit 2, no traceback, no output) instead of diffusers' warning
    and a half-applied LoRA."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(GRAPHS / "lora.yaml"), "--set", "model=builtin:tinyxl",
                                      "--set", "steps=1", "--no-cache", "-q", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "does not fit this SDXL UNet" in result.output and "tinyworld-style" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_unet_only_sd1_lora_on_sdxl_is_refused_at_the_node(ctx: Any, tmp_path: Path) -> None:
    """The node reads the header when it runs too: an InputError on 'path' before any weights load."""
    from nodegraph_diffusion.lora import save_tiny_style_lora
    from nodegraph_diffusion.model_nodes import load_lora, load_model
    from nodegraph_diffusion.paths import BUILTIN_DIR, LoraRef, ModelRef

    sd1 = save_tiny_style_lora(BUILTIN_DIR / "tinyworld", tmp_path / "sd1-lora")
    unet_only = tmp_path / "sd1_unet_only.safetensors"
    save_file({k: v for k, v in load_file(sd1).items() if k.startswith("unet.")}, str(unet_only))
    xl = load_model(ctx, ModelRef("builtin:tinyxl"))
    with pytest.raises(InputError, match="not for SDXL models.*32-wide") as info:
        load_lora(ctx, xl.unet, xl.text_encoder, LoraRef(str(unet_only)))
    assert info.value.field == "path"
    assert ctx.resources.load_count(f"{xl.unet.source.fingerprint}:unet") == 0


def test_same_names_other_shapes_is_an_input_error_and_leaves_the_model_clean(
        ctx: Any, tmp_path: Path, files: dict[str, Path]) -> None:
    from nodegraph_diffusion.loading import use_unet
    from nodegraph_diffusion.model_nodes import load_lora, load_model
    from nodegraph_diffusion.paths import LoraRef, ModelRef

    state = load_file(files["diffusers"])
    key = next(k for k in sorted(state) if k.startswith("unet.") and "attn1.to_q.lora_A" in k)
    state[key] = torch.randn(4, 48)  # 48-wide input on a 64-wide layer
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(bad)))
    with pytest.raises(InputError, match="does not fit this SDXL model's unet.*size mismatch"), \
            use_unet(ctx, patched.unet):
        pass
    with use_unet(ctx, model.unet) as unet:
        assert not getattr(unet, "peft_config", None)  # nothing half-injected stays behind


def test_cli_validate_exits_2_on_a_mismatched_lora(tmp_path: Path, files: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    graph = tmp_path / "sd1_with_xl_lora.yaml"
    text = (GRAPHS / "lora.yaml").read_text().replace('"builtin:tinyworld-style"', f'"{files["kohya"]}"')
    graph.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(graph)])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "sd1_with_xl_lora.yaml" in flat and "styled" in flat and "path" in flat, flat
    assert "not for SD1.x models" in flat and "Traceback" not in flat
