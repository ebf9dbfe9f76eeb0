"""diffusion.load_transformer beyond the happy path: the BFL converter equals diffusers' at FLUX.1's
widths, LoRAs attach to a replaced transformer, fp8/GGUF storage survives placement, and bad files
(another family's, another width's, truncated, scaled fp8, pickled) fail at 'path' naming the file —
exit 2 from the CLI, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import cpu_options
from transformer_file_writers import fp8, tiny_transformer, to_bfl, write_gguf, write_safetensors

from nodegraph import Engine

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
FLUX1_DEV = {"num_attention_heads": 24, "attention_head_dim": 128}  # inner width 3072


@pytest.fixture(scope="session")
def tiny_state() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in tiny_transformer().state_dict().items()}


@pytest.fixture(scope="session")
def bfl_file(tmp_path_factory: pytest.TempPathFactory, tiny_state: dict[str, torch.Tensor]) -> Path:
    return write_safetensors(tmp_path_factory.mktemp("bfl") / "flux1-tiny.safetensors", to_bfl(tiny_state))


@pytest.mark.slow  # ~10 s on 2 shared cores, most of it importing diffusers' single-file module
def test_bfl_converter_equals_diffusers_converter_at_flux1_widths() -> None:
    """diffusers' converter only runs at FLUX.1's widths: a header-sized stand-in (one column per row,
    every value distinct) of FLUX.1-dev's layout, 2 double + 2 single blocks, converts alike both ways."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
    from nodegraph_diffusion.flux_bfl import bfl_to_diffusers

    inner = 3072
    rows = {"qkv": 3 * inner, "linear1": 3 * inner + 4 * inner, "mod": 6 * inner, "single_mod": 3 * inner,
            "mlp0": 4 * inner, "final_mod": 2 * inner}
    names = {"time_in.in_layer": inner, "time_in.out_layer": inner, "vector_in.in_layer": inner,
             "vector_in.out_layer": inner, "guidance_in.in_layer": inner, "guidance_in.out_layer": inner,
             "txt_in": inner, "img_in": inner, "final_layer.linear": 64,
             "final_layer.adaLN_modulation.1": rows["final_mod"]}
    for i in range(2):
        for side in ("img", "txt"):
            head = f"double_blocks.{i}.{side}"
            names |= {f"{head}_mod.lin": rows["mod"], f"{head}_attn.qkv": rows["qkv"],
                      f"{head}_attn.proj": inner, f"{head}_mlp.0": rows["mlp0"], f"{head}_mlp.2": inner}
        names |= {f"single_blocks.{i}.linear1": rows["linear1"], f"single_blocks.{i}.linear2": inner,
                  f"single_blocks.{i}.modulation.lin": rows["single_mod"]}
    state: dict[str, torch.Tensor] = {}
    start = 0
    for name, n in names.items():
        for kind in ("weight", "bias"):
            shape = (n, 1) if kind == "weight" else (n,)
            state[f"{name}.{kind}"] = torch.arange(start, start + n, dtype=torch.float64).reshape(shape)
            start += n
    for i in range(2):
        for side in ("img_attn", "txt_attn"):
            for norm in ("query_norm", "key_norm"):
                state[f"double_blocks.{i}.{side}.norm.{norm}.scale"] = torch.arange(start, start + 128.0)
                start += 128
        for norm in ("query_norm", "key_norm"):
            state[f"single_blocks.{i}.norm.{norm}.scale"] = torch.arange(start, start + 128.0)
            start += 128
    theirs = convert_flux_transformer_checkpoint_to_diffusers({f"model.diffusion_model.{k}": v
                                                               for k, v in state.items()})
    ours = bfl_to_diffusers(state, FLUX1_DEV)
    assert set(ours) == set(theirs) and len(ours) > 100
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def _graph(tmp_path: Path, transformer: Path, **params: Any) -> Any:
    params = {"transformer": str(transformer), "steps": 2, "seed": 1, **params}
    return Engine().run(GRAPHS / "flux_gguf.yaml", params, cpu_options(tmp_path))


LORA_GRAPH = """\
version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinyflux"}
  quant:    {type: diffusion.load_transformer, path: "%s", unet: "@model.unet"}
  styled:   {type: diffusion.load_lora, unet: "@quant", text_encoder: "@model.text_encoder",
             path: "builtin:tinyflux-style", unet_weight: 0.8, text_encoder_weight: 0.0}
  text:     {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64, unet: "@styled.unet"}
  latents:  {type: diffusion.sample, unet: "@%s", scheduler: "@model.scheduler", positive: "@text",
             latents: "@empty", seed: 1, steps: 2, cfg: 1.0}
"""


@pytest.mark.slow  # four graph runs
def test_lora_attaches_to_replaced_transformer(tmp_path: Path, bfl_file: Path,
                                               tiny_state: dict[str, torch.Tensor]) -> None:
    """A LoRA on a BFL file's transformer equals the LoRA on the model's own (same weights); on a GGUF
    one it acts (peft wraps diffusers' GGUF layers)."""
    gguf_file = write_gguf(tmp_path / "tiny-Q8_0.gguf", to_bfl(tiny_state), "Q8_0")

    def latents(file: Path, unet: str, own: bool = False) -> torch.Tensor:
        text = LORA_GRAPH % (file, unet)
        if own:
            text = text.replace('unet: "@quant"', 'unet: "@model.unet"')
        graph = tmp_path / f"g{len(list(tmp_path.glob('g*.yaml')))}.yaml"
        graph.write_text(text)
        return Engine().run(graph, {}, cpu_options(tmp_path)).outputs["latents"]["out"].samples

    with_lora = latents(bfl_file, "styled.unet")
    assert torch.equal(with_lora, latents(bfl_file, "styled.unet", own=True))
    assert (with_lora - latents(bfl_file, "quant")).abs().max().item() > 1e-3
    assert (latents(gguf_file, "styled.unet") - latents(gguf_file, "quant")).abs().max().item() > 1e-3


def test_storage_is_kept_when_placed(make_ctx: Any, tmp_path: Path,
                                     tiny_state: dict[str, torch.Tensor]) -> None:
    """fp8 weights stay fp8 and GGUF ones quantized under a bfloat16 run (placed, never cast); they
    compute in the node's dtype; a plain file follows the run's dtype."""
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from nodegraph_diffusion.loading import use_unet
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.transformer_nodes import load_transformer

    ctx = make_ctx(dtype="bfloat16")
    files = {"fp8": write_safetensors(tmp_path / "fp8.safetensors", fp8(to_bfl(tiny_state))),
             "gguf": write_gguf(tmp_path / "q4.gguf", to_bfl(tiny_state), "Q4_0"),
             "plain": write_safetensors(tmp_path / "plain.safetensors", to_bfl(tiny_state))}
    unet = load_model(ctx, "builtin:tinyflux").unet
    notes: list[str] = []
    ctx.note = notes.append  # type: ignore[method-assign]
    for kind, file in files.items():
        handle = load_transformer(ctx, str(file), unet, dtype="auto" if kind == "plain" else "float32")
        with use_unet(ctx, handle) as model:
            qkv = model.transformer_blocks[0].attn.to_q.weight
            if kind == "fp8":
                assert qkv.dtype == torch.float8_e4m3fn and model.dtype == torch.float32
            elif kind == "gguf":
                assert isinstance(qkv, GGUFParameter) and model.dtype == torch.float32
            else:
                assert qkv.dtype == torch.bfloat16 and model.dtype == torch.bfloat16
    assert notes == [
        "transformer from fp8.safetensors: float8_e4m3fn weights kept, upcast per layer to float32",
        "transformer from q4.gguf: GGUF (F32, Q4_0), dequantized per layer to float32",
        "transformer from plain.safetensors: F32 weights, computing in the run's dtype"]


def _sd3_file(tmp_path: Path) -> Path:
    from diffusers import SD3Transformer2DModel
    from nodegraph_diffusion.paths import BUILTIN_DIR

    model = SD3Transformer2DModel.from_pretrained(BUILTIN_DIR / "tinysd3", subfolder="transformer",
                                                  local_files_only=True)
    return write_safetensors(tmp_path / "sd3-transformer.safetensors", model.state_dict())


def _bad_files(tmp_path: Path, bfl_file: Path,
               tiny_state: dict[str, torch.Tensor]) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the message must hold)."""
    data = bfl_file.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 1000])
    gguf_file = write_gguf(tmp_path / "whole.gguf", to_bfl(tiny_state), "Q8_0")
    short_gguf = tmp_path / "truncated.gguf"
    short_gguf.write_bytes(gguf_file.read_bytes()[:-5000])
    scaled = dict(fp8(to_bfl(tiny_state)))
    scaled["double_blocks.0.img_attn.qkv.scale_weight"] = torch.ones(())
    scaled["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    no_guidance = {k: v for k, v in to_bfl(tiny_state).items() if not k.startswith("guidance_in.")}
    pickled = tmp_path / "flux1-tiny.ckpt"
    torch.save(to_bfl(tiny_state), pickled)
    return {
        "sd3": (_sd3_file(tmp_path), "a transformer file for SD3 models, but 'unet' comes from Flux.1"),
        "truncated": (truncated, "corrupt or truncated safetensors"),
        "truncated_gguf": (short_gguf, "corrupt or truncated GGUF"),
        "scaled": (write_safetensors(tmp_path / "scaled.safetensors", scaled), "scaled* fp8"),
        "schnell_like": (write_safetensors(tmp_path / "no-guidance.safetensors", no_guidance),
                         "4 tensors missing (time_text_embed.guidance_embedder"),
        "pickle": (pickled, "refusing to load pickled weights"),
        "not_weights": (_text_file(tmp_path), "corrupt or truncated safetensors"),
    }


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights")
    return path


def test_bad_files_fail_at_path_naming_the_file(make_ctx: Any, tmp_path: Path, bfl_file: Path,
                                                 tiny_state: dict[str, torch.Tensor]) -> None:
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.transformer_nodes import load_transformer

    from nodegraph.api import InputError

    ctx = make_ctx()
    unet = load_model(ctx, "builtin:tinyflux").unet
    for name, (file, words) in _bad_files(tmp_path, bfl_file, tiny_state).items():
        with pytest.raises(InputError) as info:
            load_transformer(ctx, str(file), unet)
        assert info.value.field == "path", name
        assert str(file) in str(info.value) and words in str(info.value), (name, str(info.value))
    with pytest.raises(InputError, match="refusing to load pickled weights"):  # even when pickles are allowed
        load_transformer(make_ctx(allow_pickle=True), str(tmp_path / "flux1-tiny.ckpt"), unet)
    sd1 = load_model(ctx, "builtin:tinyworld").unet
    with pytest.raises(InputError) as info:
        load_transformer(ctx, str(bfl_file), sd1)
    assert info.value.field == "unet"


@pytest.mark.slow  # two CLI runs (one reaches the loader)
def test_cli_exits_2_on_bad_files(tmp_path: Path, bfl_file: Path) -> None:
    """Another family's file (refused at validation) and a truncated one (refused when the node runs)."""
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    truncated = tmp_path / "flux1-cut.safetensors"
    truncated.write_bytes(bfl_file.read_bytes()[:-4096])
    out = tmp_path / "out"
    for file, words in ((_sd3_file(tmp_path), "for SD3 models"), (truncated, "corrupt or truncated")):
        argv = ["run", str(GRAPHS / "flux_gguf.yaml"), "--set", f"transformer={file}", "--set", "steps=1",
                "--out", str(out), "--no-cache", "-q"]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert file.name in result.output and words in result.output, result.output
        assert "Traceback" not in result.output
        assert not out.exists() or not list(out.iterdir())
    missing = CliRunner().invoke(app, ["run", str(GRAPHS / "flux_gguf.yaml"), "--out", str(out), "--no-cache",
                                       "-q"])  # the default names the real file: not here, said so
    assert missing.exit_code == 2, missing.output
    assert "flux1-dev-Q8_0.gguf" in missing.output and "Traceback" not in missing.output


def test_validate_refuses_another_familys_file_before_loading(tmp_path: Path) -> None:
    """`nodegraph validate` reads the .safetensors header: an SD3 file for a Flux model fails at 'path'."""
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    sd3 = _sd3_file(tmp_path)
    registry = build_registry()
    load_plan(GRAPHS / "flux_gguf.yaml", registry)  # the default (a file not here): fine until it runs
    with pytest.raises(GraphError) as info:
        load_plan(GRAPHS / "flux_gguf.yaml", registry, {"transformer": str(sd3)})
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == ("quant", "path")
    assert "sd3-transformer.safetensors" in str(problem) and "for SD3 models" in str(problem)


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32])
def test_fp8_model_equals_diffusers_way_tensor_for_tensor(tmp_path: Path, tiny_state: dict[str, torch.Tensor],
                                                          compute: torch.dtype) -> None:
    """fp8_model (no whole-model copy at the compute dtype) leaves every tensor as diffusers' way does
    (`from_single_file(torch_dtype=compute)` + `enable_layerwise_casting`): same dtype, same bits; the
    file mixes fp8 weights with bf16 and fp32 tensors, as downloaded fp8 files do."""
    from diffusers import FluxTransformer2DModel
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.transformer_files import fp8_model

    state = fp8(tiny_state)
    state = {k: v.to(torch.bfloat16) if k.endswith(".bias") and i % 2 else v
             for i, (k, v) in enumerate(state.items())}
    assert {v.dtype for v in state.values()} == {torch.float8_e4m3fn, torch.bfloat16, torch.float32}
    file = write_safetensors(tmp_path / "mixed-fp8.safetensors", state)
    theirs = FluxTransformer2DModel.from_single_file(str(file), config=str(BUILTIN_DIR / "tinyflux"),
                                                     subfolder="transformer", local_files_only=True,
                                                     torch_dtype=compute)
    theirs.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
    ours = fp8_model(FluxTransformer2DModel, dict(theirs.config), dict(state), torch.float8_e4m3fn, compute)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert set(ours_state) == set(theirs_state)
    kinds = set()
    for key, value in theirs_state.items():
        assert ours_state[key].dtype == value.dtype, key
        assert torch.equal(ours_state[key].view(torch.uint8), value.view(torch.uint8)), key
        kinds.add(value.dtype)
    assert kinds == {torch.float8_e4m3fn, compute}  # both storages present: the comparison covers both


@pytest.mark.slow  # three ControlNet graph runs
def test_controlnet_attaches_to_replaced_transformer(tmp_path: Path, bfl_file: Path,
                                                     tiny_state: dict[str, torch.Tensor]) -> None:
    """graphs/flux_controlnet.yaml with its transformer from a BFL file: the latents of the model's own
    transformer; from a GGUF file it runs too (and the ControlNet acts: strength 0 differs)."""
    original = (GRAPHS / "flux_controlnet.yaml").read_text()
    assert original.count('unet: "@model.unet", scheduler') == 1
    gguf_file = write_gguf(tmp_path / "tiny-Q8_0.gguf", to_bfl(tiny_state), "Q8_0")
    params = {"image": str(GRAPHS / "inputs" / "scene_64.png"), "steps": 2, "seed": 3}

    def latents(file: Path | None, **more: Any) -> torch.Tensor:
        text = original
        if file is not None:
            text = text.replace('unet: "@model.unet", scheduler', 'unet: "@file", scheduler').replace(
                "nodes:\n", f'nodes:\n  file:     {{type: diffusion.load_transformer, path: "{file}", '
                            'unet: "@model.unet"}\n')
        graph = tmp_path / f"cn{len(list(tmp_path.glob('cn*.yaml')))}.yaml"
        graph.write_text(text)
        result = Engine().run(graph, {**params, **more}, cpu_options(tmp_path / graph.stem))
        return result.outputs["latents"]["out"].samples

    assert torch.equal(latents(bfl_file), latents(None))
    assert (latents(gguf_file) - latents(gguf_file, strength=0.0)).abs().max().item() > 1e-4


def test_config_names_the_transformer_config(make_ctx: Any, bfl_file: Path) -> None:
    """`config`: a diffusers model folder or its transformer folder work; a schnell config for a dev
    file, or a name that is nothing, fail at the field that is wrong."""
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.transformer_nodes import load_transformer

    from nodegraph.api import InputError

    ctx = make_ctx()
    unet = load_model(ctx, "builtin:tinyflux").unet
    for config in ("builtin:tinyflux", str(BUILTIN_DIR / "tinyflux" / "transformer")):
        assert load_transformer(ctx, str(bfl_file), unet, config=config).source.format == "transformer_file"
    with pytest.raises(InputError, match="tinyflux-schnell") as info:
        load_transformer(ctx, str(bfl_file), unet, config="builtin:tinyflux-schnell")
    assert info.value.field == "path"  # the file does not fit that config
    with pytest.raises(InputError, match="shipped config") as info:
        load_transformer(ctx, str(bfl_file), unet, config="no-such-config")
    assert info.value.field == "config"
    with pytest.raises(InputError, match="config.json") as info:
        load_transformer(ctx, str(bfl_file), unet, config=str(BUILTIN_DIR / "tinyflux" / "scheduler"))
    assert info.value.field == "config"


@pytest.mark.slow  # four graph runs
def test_optimize_basic_skips_fusion_of_stored_weights(tmp_path: Path,
                                                       tiny_state: dict[str, torch.Tensor]) -> None:
    """`--optimize basic` fuses q/k/v of plain weights only: GGUF and fp8 transformers run unfused
    (diffusers' fusion fails on them), with the latents of `none`, and the report says why."""
    from dataclasses import replace

    files = [write_gguf(tmp_path / "q8.gguf", to_bfl(tiny_state), "Q8_0"),
             write_safetensors(tmp_path / "fp8.safetensors", fp8(to_bfl(tiny_state)))]
    for file in files:
        plain = _graph(tmp_path / f"{file.stem}-none", file)
        options = replace(cpu_options(tmp_path / f"{file.stem}-basic"), optimize="basic")
        params = {"transformer": str(file), "steps": 2, "seed": 1}
        fused = Engine().run(GRAPHS / "flux_gguf.yaml", params, options)
        assert torch.equal(fused.outputs["latents"]["out"].samples, plain.outputs["latents"]["out"].samples)
        assert any("fused QKV skipped: its weights are stored quantized or in fp8" in n for n in fused.notes)


FP8_LORA_GRAPH = """\
version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinyflux"}
  file:     {type: diffusion.load_transformer, path: "%s", unet: "@model.unet"}
  styled:   {type: diffusion.load_lora, unet: "@file", text_encoder: "@model.text_encoder", path: "%s",
             unet_weight: 1.0, text_encoder_weight: 1.0}
  text:     {type: diffusion.encode_text, encoder: "@model.text_encoder", text: "a red circle"}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64, unet: "@styled.unet"}
  latents:  {type: diffusion.sample, unet: "@styled.unet", scheduler: "@model.scheduler", positive: "@text",
             latents: "@empty", seed: 1, steps: 2, cfg: 1.0}
"""


@pytest.mark.slow  # a pipeline load and run, a graph run
@pytest.mark.parametrize("kind", ["fp8", "Q8_0"])
def test_lora_on_stored_file_equals_diffusers_order(tmp_path: Path, tiny_state: dict[str, torch.Tensor],
                                                    kind: str) -> None:
    """A LoRA on a resident fp8 or GGUF transformer gives the latents of diffusers' own order: the
    transformer loaded from the same stored weights, the LoRA loaded into it (`load_lora_weights`),
    then (fp8) layerwise casting enabled, which leaves the LoRA layers at the compute dtype."""
    from diffusers import FluxPipeline, FluxTransformer2DModel, GGUFQuantizationConfig
    from flux_lora_files import write_diffusers_lora
    from nodegraph_diffusion.owned import own_storage
    from nodegraph_diffusion.paths import BUILTIN_DIR

    lora = write_diffusers_lora(tmp_path / "lora" / "flux_lora.safetensors", seed=3, text_encoder=False)
    kwargs: dict[str, Any] = {"config": str(BUILTIN_DIR / "tinyflux"), "subfolder": "transformer",
                              "local_files_only": True, "torch_dtype": torch.float32}
    if kind == "fp8":
        ours_file = write_safetensors(tmp_path / "flux1-fp8.safetensors", fp8(to_bfl(tiny_state)))
        theirs_file = write_safetensors(tmp_path / "diffusers-fp8.safetensors", fp8(tiny_state))
    else:
        ours_file = write_gguf(tmp_path / "flux1-Q8_0.gguf", to_bfl(tiny_state), kind)
        theirs_file = write_gguf(tmp_path / "diffusers-Q8_0.gguf", tiny_state, kind)
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=torch.float32)
    graph = tmp_path / "stored_lora.yaml"
    graph.write_text(FP8_LORA_GRAPH % (ours_file, lora))
    ours = Engine().run(graph, {}, cpu_options(tmp_path / "out")).outputs["latents"]["out"].samples

    pipe = FluxPipeline.from_pretrained(BUILTIN_DIR / "tinyflux", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer = FluxTransformer2DModel.from_single_file(str(theirs_file), **kwargs)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)  # the LoRA's tensors too (views of its file: 1-ulp kernel paths)
    if kind == "fp8":
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                  compute_dtype=torch.float32)
    packed = pipe("a red circle", height=64, width=64, num_inference_steps=2, guidance_scale=3.5,
                  output_type="latent", generator=torch.Generator().manual_seed(1)).images
    theirs = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    assert (ours - theirs).abs().max().item() == 0.0
