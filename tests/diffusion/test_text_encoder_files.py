"""Text encoders and VAEs from separate files (ComfyUI's models/text_encoders, BFL's ae.safetensors).

The tiny Flux's CLIP-L, T5 and VAE are written as ComfyUI's separate files (flow_files.py) and combined
with a transformer in a graph; its pixels must equal FluxPipeline on the original tiny model (CPU fp32,
max abs 0.0). An fp8 T5 file is upcast as it loads: it equals the pipeline whose T5 holds the same
fp8-rounded weights, exactly. The SD3 case: a transformer + VAE file (Stability's sd3.5_medium layout)
with CLIP-L, CLIP-G and T5 files. Files in the wrong slot, corrupt or pickled are input errors naming
the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from nodegraph import Engine, RunOptions
from nodegraph.errors import GraphError, NodeFailed
from tests.diffusion.flow_files import encoder_file, sd3_all_in_one, vae_file
from tests.diffusion.test_flux import PROMPT, flux_pipe
from tests.diffusion.test_sd3_single_file import identity_clip_l_pipe

FLUX_GRAPH = {
    "version": 1,
    "params": {"clip_l": {"type": "str"}, "t5": {"type": "str"}, "ae": {"type": "str"},
               "config": {"type": "str", "default": "tinyflux"}},
    "nodes": {
        "model": {"type": "diffusion.load_model", "path": "builtin:tinyflux"},
        "encoders": {"type": "diffusion.load_text_encoders", "family": "flux", "config": "$config",
                     "clip_l": "$clip_l", "t5": "$t5"},
        "vae": {"type": "diffusion.load_vae", "path": "$ae", "family": "flux"},
        "text": {"type": "diffusion.encode_text", "encoder": "@encoders", "text": PROMPT},
        "positive": {"type": "diffusion.flux_guidance", "conditioning": "@text", "guidance": 4.0},
        "empty": {"type": "diffusion.empty_latents", "width": 64, "height": 64, "unet": "@model.unet"},
        "latents": {"type": "diffusion.sample", "unet": "@model.unet", "scheduler": "@model.scheduler",
                    "positive": "@positive", "latents": "@empty", "seed": 3, "steps": 3, "cfg": 1.0},
        "image": {"type": "diffusion.vae_decode", "vae": "@vae", "latents": "@latents"},
    },
}


def _graph(tmp_path: Path, graph: dict[str, Any], name: str = "files.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    return path


def _run(tmp_path: Path, graph: dict[str, Any], params: dict[str, Any]) -> Any:
    options = RunOptions(out_dir=tmp_path, device="cpu", dtype="float32", show_progress=False)
    return Engine().run(_graph(tmp_path, graph), params, options)


@pytest.fixture(scope="module")
def flux() -> Any:
    return flux_pipe("tinyflux")


@pytest.fixture(scope="module")
def flux_files(flux: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fluxfiles")
    return {"clip_l": encoder_file(flux.text_encoder, root / "clip_l.safetensors"),
            "t5": encoder_file(flux.text_encoder_2, root / "t5xxl_fp32.safetensors"),
            "t5_fp8": encoder_file(flux.text_encoder_2, root / "t5xxl_fp8_e4m3fn.safetensors",
                                   torch.float8_e4m3fn),
            "ae": vae_file(flux.vae, root / "ae.safetensors")}


def _flux_image(pipe: Any) -> torch.Tensor:
    return pipe(PROMPT, height=64, width=64, num_inference_steps=3, guidance_scale=4.0, output_type="pt",
                generator=torch.Generator().manual_seed(3)).images


def test_flux_from_separate_files_equals_pipeline(tmp_path: Path, flux: Any,
                                                  flux_files: dict[str, Path]) -> None:
    params = {k: str(flux_files[k]) for k in ("clip_l", "t5", "ae")}
    result = _run(tmp_path, FLUX_GRAPH, params)
    source = result.outputs["encoders"]["out"].source
    assert (source.family, source.format, source.base) == ("flux", "component_files", "tinyflux")
    assert (result.outputs["image"]["out"].pixels - _flux_image(flux)).abs().max().item() == 0.0


def test_fp8_t5_file_is_upcast_and_equals_the_rounded_pipeline(tmp_path: Path, flux: Any,
                                                               flux_files: dict[str, Path]) -> None:
    from diffusers import FluxPipeline

    params = {"clip_l": str(flux_files["clip_l"]), "t5": str(flux_files["t5_fp8"]),
              "ae": str(flux_files["ae"])}
    result = _run(tmp_path, FLUX_GRAPH, params)
    rounded = type(flux.text_encoder_2)(flux.text_encoder_2.config).eval()
    state = {k: v.to(torch.float8_e4m3fn).to(torch.float32)
             for k, v in flux.text_encoder_2.state_dict().items()}
    rounded.load_state_dict(state)
    pipe = FluxPipeline(**{**flux.components, "text_encoder_2": rounded})
    pipe.set_progress_bar_config(disable=True)
    ours = result.outputs["image"]["out"].pixels
    assert (ours - _flux_image(pipe)).abs().max().item() == 0.0
    assert (ours - _flux_image(flux)).abs().max().item() > 0.0  # fp8 storage did round the weights


@pytest.fixture(scope="module")
def sd3_reference() -> Any:
    return identity_clip_l_pipe()


@pytest.fixture(scope="module")
def sd3_files(sd3_reference: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sd3parts")
    parts = sd3_reference.components
    return {"model": sd3_all_in_one(parts, root / "sd3.5_tiny.safetensors", with_encoders=False),
            "clip_l": encoder_file(parts["text_encoder"], root / "clip_l.safetensors"),
            "clip_g": encoder_file(parts["text_encoder_2"], root / "clip_g.safetensors"),
            "t5": encoder_file(parts["text_encoder_3"], root / "t5xxl_fp16.safetensors")}


SD3_GRAPH = {
    "version": 1,
    "params": {"model": {"type": "str"}, "clip_l": {"type": "str"}, "clip_g": {"type": "str"},
               "t5": {"type": "str"}},
    "nodes": {
        "model": {"type": "diffusion.load_model", "path": "$model"},
        "encoders": {"type": "diffusion.load_text_encoders", "family": "sd3", "config": "tinysd3",
                     "clip_l": "$clip_l", "clip_g": "$clip_g", "t5": "$t5"},
        "positive": {"type": "diffusion.encode_text", "encoder": "@encoders", "text": PROMPT},
        "negative": {"type": "diffusion.encode_text", "encoder": "@encoders", "text": "blurry"},
        "empty": {"type": "diffusion.empty_latents", "width": 64, "height": 64, "unet": "@model.unet"},
        "latents": {"type": "diffusion.sample", "unet": "@model.unet", "scheduler": "@model.scheduler",
                    "positive": "@positive", "negative": "@negative", "latents": "@empty", "seed": 2,
                    "steps": 2, "cfg": 4.0},
        "image": {"type": "diffusion.vae_decode", "vae": "@model.vae", "latents": "@latents"},
    },
}


def test_sd3_transformer_file_with_encoder_files_equals_pipeline(tmp_path: Path, sd3_reference: Any,
                                                                 sd3_files: dict[str, Path]) -> None:
    result = _run(tmp_path, SD3_GRAPH, {k: str(v) for k, v in sd3_files.items()})
    image = sd3_reference(PROMPT, negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                          guidance_scale=4.0, output_type="pt",
                          generator=torch.Generator().manual_seed(2)).images
    assert (result.outputs["image"]["out"].pixels - image).abs().max().item() == 0.0


def _refusal(tmp_path: Path, graph: dict[str, Any], params: dict[str, Any]) -> NodeFailed:
    with pytest.raises(NodeFailed) as caught:
        _run(tmp_path, graph, params)
    return caught.value


@pytest.mark.parametrize(("slot", "wrong", "says"), [
    ("t5", "clip_g", "is a CLIP text encoder 32 wide, but t5 takes a T5 encoder 64 wide"),
    ("clip_g", "clip_l", "is a CLIP text encoder 16 wide, but clip_g takes a CLIP text encoder 32 wide"),
    ("clip_l", "t5", "is a T5 encoder 64 wide, but clip_l takes a CLIP text encoder 16 wide"),
])
def test_an_encoder_in_the_wrong_slot_names_the_field(tmp_path: Path, sd3_files: dict[str, Path], slot: str,
                                                      wrong: str, says: str) -> None:
    params = {k: str(v) for k, v in sd3_files.items()} | {slot: str(sd3_files[wrong])}
    problem = _refusal(tmp_path, SD3_GRAPH, params)
    assert "node 'encoders'" in str(problem) and says in str(problem)
    assert problem.problem.field == slot


def test_corrupt_and_pickled_encoder_files_are_refused(tmp_path: Path, sd3_files: dict[str, Path]) -> None:
    cut = tmp_path / "clip_l_cut.safetensors"
    cut.write_bytes(sd3_files["clip_l"].read_bytes()[:5000])
    problem = _refusal(tmp_path, SD3_GRAPH, {k: str(v) for k, v in sd3_files.items()} | {"clip_l": str(cut)})
    assert problem.problem.field == "clip_l" and "corrupt or truncated" in str(problem)
    pickled = tmp_path / "t5xxl.pt"
    torch.save({"shared.weight": torch.zeros(2, 2)}, pickled)
    problem = _refusal(tmp_path, SD3_GRAPH, {k: str(v) for k, v in sd3_files.items()} | {"t5": str(pickled)})
    assert problem.problem.field == "t5" and "refusing to load pickled weights" in str(problem)


def test_flux_needs_t5_and_takes_no_clip_g(tmp_path: Path, flux_files: dict[str, Path]) -> None:
    graph = yaml.safe_load(yaml.safe_dump(FLUX_GRAPH))
    del graph["nodes"]["encoders"]["t5"], graph["params"]["t5"]
    problem = _refusal(tmp_path, graph, {k: str(flux_files[k]) for k in ("clip_l", "ae")})
    assert problem.problem.field == "t5" and "needs its t5 text encoder" in str(problem)
    graph = yaml.safe_load(yaml.safe_dump(FLUX_GRAPH))
    graph["nodes"]["encoders"]["clip_g"] = "$clip_l"
    problem = _refusal(tmp_path, graph, {k: str(flux_files[k]) for k in ("clip_l", "t5", "ae")})
    assert problem.problem.field == "clip_g" and "no clip_g encoder" in str(problem)


def test_vae_files_of_the_wrong_kind_name_the_family(tmp_path: Path, ctx: Any,
                                                     flux_files: dict[str, Path]) -> None:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    from tests.diffusion.flow_files import vae_to_original

    sd1_vae = tmp_path / "sd1_vae.safetensors"  # 4 latent channels: no Flux VAE
    from diffusers import AutoencoderKL

    sd1 = AutoencoderKL.from_pretrained(BUILTIN_DIR / "tinyworld" / "vae")
    save_file(vae_to_original(dict(sd1.state_dict())), str(sd1_vae))
    params = {k: str(flux_files[k]) for k in ("clip_l", "t5")} | {"ae": str(sd1_vae)}
    problem = _refusal(tmp_path, FLUX_GRAPH, params)
    assert problem.problem.field == "family" and "not a VAE family 'flux' reads" in str(problem)
    from nodegraph_diffusion.model_nodes import load_vae
    from nodegraph_diffusion.paths import VaeRef

    from nodegraph.api import InputError

    with pytest.raises(InputError) as caught:  # a Flux VAE read as SD1.x's
        load_vae(ctx, VaeRef(str(flux_files["ae"])), family="sd1")
    assert caught.value.field == "family" and "families with a config for it: sd3, flux" in str(caught.value)
    graph = yaml.safe_load(yaml.safe_dump(FLUX_GRAPH))
    graph["nodes"]["vae"]["family"] = "sd1"  # in a graph: validation already sees the families differ
    with pytest.raises(GraphError, match="Flux.1 latents from node 'latents', but 'vae' is an SD1.x VAE"):
        _run(tmp_path, graph, {k: str(flux_files[k]) for k in ("clip_l", "t5", "ae")})


def test_cli_exit_2_for_a_clip_file_given_as_t5(tmp_path: Path, flux_files: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    graph = _graph(tmp_path, {**FLUX_GRAPH, "nodes": {**FLUX_GRAPH["nodes"], "save": {
        "type": "core.save_image", "image": "@image", "path": "flux_files.png"}}})
    sets = [f"clip_l={flux_files['clip_l']}", f"t5={flux_files['clip_l']}", f"ae={flux_files['ae']}"]
    args = ["run", str(graph), *(x for s in sets for x in ("--set", s))]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    assert result.exit_code == 2, result.output
    assert "node 'encoders'" in result.output and "field 't5'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "flux_files.png").exists()


def test_t5_tokenizer_is_asked_for_where_none_is_shipped(tmp_path: Path) -> None:
    """Real configs carry no T5 tokenizer (no installed package has one): the error names the field and
    where to find one; given a folder, it is used. CLIP's tokenizers are built from the shipped merges."""
    from nodegraph_diffusion.file_loading import load_t5_tokenizer
    from nodegraph_diffusion.loading import CONFIGS_DIR, load_tokenizer
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.types import ModelSource

    from nodegraph.api import InputError

    flux_dev = ModelSource(str(tmp_path / "t5xxl_fp16.safetensors"), "x", "component_files", "flux-dev",
                           str(CONFIGS_DIR / "flux-dev"), None, "flux")
    with pytest.raises(InputError) as caught:
        load_tokenizer(flux_dev, "tokenizer_2")
    assert caught.value.field == "t5_tokenizer"
    assert "tokenizer_2 folder of black-forest-labs/FLUX.1-dev" in str(caught.value)
    t5_folder = str(BUILTIN_DIR / "tinyflux" / "tokenizer_2")
    given = ModelSource(**{**flux_dev.__dict__, "t5_tokenizer_dir": t5_folder})
    assert load_t5_tokenizer(given, "tokenizer_2")("a cat").input_ids[-1] == 1  # T5's </s>
    clip = load_tokenizer(flux_dev, "tokenizer")
    assert len(clip) == 49408 and clip.pad_token == "<|endoftext|>"
    sd35 = ModelSource(**{**flux_dev.__dict__, "base": "sd35-large",
                          "config_dir": str(CONFIGS_DIR / "sd35-large"), "family": "sd3"})
    assert load_tokenizer(sd35, "tokenizer_2").pad_token == "!"  # CLIP-G pads with "!" (id 0), as SDXL's
    with pytest.raises(InputError, match="t5_tokenizer"):
        load_tokenizer(sd35, "tokenizer_3")
    only_spiece = tmp_path / "t5-v1_1-xxl"
    only_spiece.mkdir()
    (only_spiece / "spiece.model").write_bytes(b"not read")
    with pytest.raises(InputError) as caught:
        bare = ModelSource(**{**flux_dev.__dict__, "t5_tokenizer_dir": str(only_spiece)})
        load_t5_tokenizer(bare, "tokenizer_2")
    assert caught.value.field == "t5_tokenizer"


def test_scaled_fp8_weights_are_multiplied_back_by_their_scales() -> None:
    """ComfyUI's t5xxl_fp8_e4m3fn_scaled: fp8 weights with a `.scale_weight` each and a `scaled_fp8`
    marker; plain fp8 files have neither. Markers and scales are dropped once applied."""
    from nodegraph_diffusion.file_loading import upcast_float8

    weight = torch.randn(4, 3)
    scale = torch.tensor(0.02)
    stored = (weight / scale).to(torch.float8_e4m3fn)
    marker = torch.zeros(0, dtype=torch.float8_e4m3fn)
    state = {"q.weight": stored, "q.scale_weight": scale, "scaled_fp8": marker, "norm.weight": torch.ones(3)}
    out = upcast_float8(state, torch.float32)
    assert set(out) == {"q.weight", "norm.weight"}
    assert torch.equal(out["q.weight"], stored.to(torch.float32) * scale)
    plain = upcast_float8({"q.weight": stored}, torch.bfloat16)
    assert plain["q.weight"].dtype == torch.bfloat16
    assert torch.equal(plain["q.weight"].float(), stored.float())


def test_sd3_without_a_t5_file_guides_with_zeros_as_the_pipeline(tmp_path: Path, sd3_reference: Any,
                                                                  sd3_files: dict[str, Path]) -> None:
    from diffusers import StableDiffusion3Pipeline

    graph = yaml.safe_load(yaml.safe_dump(SD3_GRAPH))
    del graph["nodes"]["encoders"]["t5"], graph["params"]["t5"]
    result = _run(tmp_path, graph, {k: str(v) for k, v in sd3_files.items() if k != "t5"})
    parts = {**sd3_reference.components, "text_encoder_3": None, "tokenizer_3": None}
    pipe = StableDiffusion3Pipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                 guidance_scale=4.0, output_type="pt", generator=torch.Generator().manual_seed(2)).images
    assert (result.outputs["image"]["out"].pixels - image).abs().max().item() == 0.0
    assert not result.outputs["positive"]["out"].embeds[:, 77:].any()


def test_config_may_be_a_diffusers_folder_or_is_refused_naming_config(ctx: Any,
                                                                     flux_files: dict[str, Path]) -> None:
    from nodegraph_diffusion.paths import TextEncoderRef
    from nodegraph_diffusion.text_encoder_files import load_text_encoders

    from nodegraph.api import InputError

    files = {"clip_l": TextEncoderRef(str(flux_files["clip_l"])), "t5": TextEncoderRef(str(flux_files["t5"]))}
    handle = load_text_encoders(ctx, "flux", config="builtin:tinyflux", **files)
    assert handle.source.base == "tinyflux" and handle.source.config_dir.endswith("builtin/tinyflux")
    with pytest.raises(InputError) as caught:  # the tiny files are no FLUX.1 encoders (768, 4096 wide)
        load_text_encoders(ctx, "flux", **files)
    assert caught.value.field == "clip_l" and "768 wide (config flux-dev)" in str(caught.value)
    with pytest.raises(InputError) as caught:
        load_text_encoders(ctx, "flux", config="sd35-large", **files)
    assert caught.value.field == "config"
    with pytest.raises(InputError) as caught:
        load_text_encoders(ctx, "sd1", **files)
    assert caught.value.field == "family"
