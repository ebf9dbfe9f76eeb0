"""SDXL single files (A1111/ComfyUI layout): read offline through the shipped configs, same pixels.

The test writes builtin:tinyxl (and its refiner) as original-layout `.safetensors` with the inverse of
diffusers' key mapping (`single_file.sdxl_diffusers_to_original`); the SDXL family recognises it and
diffusers' `from_single_file` reads it with the shipped `configs/tinyxl` folder. The real SDXL base
and refiner configs are checked for the architecture's key facts (no real-size model is built).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nodegraph_diffusion.loading import CONFIGS_DIR, load_tokenizer, use_text_encoder, use_unet, use_vae
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
from nodegraph_diffusion.types import ModelSource
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"


def write_single_file(folder: Path, target: Path) -> Path:
    """The diffusers folder `folder` (tiny SDXL base or refiner) as one A1111-layout safetensors file."""
    from nodegraph_diffusion.single_file import sdxl_diffusers_to_original
    from safetensors.torch import load_file, save_file

    def part(name: str) -> dict[str, Any] | None:
        files = sorted((folder / name).glob("*.safetensors")) if (folder / name).is_dir() else []
        return load_file(files[0]) if files else None

    parts = {name: part(name) for name in ("unet", "vae", "text_encoder", "text_encoder_2")}
    config = json.loads((folder / "unet" / "config.json").read_text())
    state = sdxl_diffusers_to_original(parts, config)  # type: ignore[arg-type]
    save_file({k: v.contiguous() for k, v in state.items()}, target)
    return target


@pytest.fixture(scope="module")
def xl_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xlfile")
    return {name: write_single_file(BUILTIN_DIR / name, root / f"{name}.safetensors")
            for name in ("tinyxl", "tinyxl-refiner")}


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


def unet_out(unet: Any, cross: int, ids: int) -> Any:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    text = torch.randn(1, 77, cross, generator=g)
    added = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, ids, generator=g)}
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=text, added_cond_kwargs=added).sample


@pytest.mark.parametrize("name,cross,ids", [("tinyxl", 64, 6), ("tinyxl-refiner", 32, 5)])
def test_single_file_components_equal_the_folder(ctx: Any, xl_files: dict[str, Path], name: str, cross: int,
                                                 ids: int) -> None:
    single = load_model(ctx, ModelRef(str(xl_files[name])))
    folder = load_model(ctx, ModelRef(f"builtin:{name}"))
    source = single.unet.source
    assert (source.format, source.family, source.base) == ("single_file", "sdxl", name)
    with use_unet(ctx, single.unet) as a, use_unet(ctx, folder.unet) as b:
        assert torch.equal(unet_out(a, cross, ids), unet_out(b, cross, ids))
    with use_vae(ctx, single.vae) as a, use_vae(ctx, folder.vae) as b:
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a.decode(z).sample, b.decode(z).sample)
    encoders = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
    for tok, enc in encoders[1:] if "refiner" in name else encoders:
        with use_text_encoder(ctx, single.text_encoder, enc, tok) as (t1, e1), \
                use_text_encoder(ctx, folder.text_encoder, enc, tok) as (t2, e2):
            ids_1 = t1("a blue square", padding="max_length", return_tensors="pt").input_ids
            ids_2 = t2("a blue square", padding="max_length", return_tensors="pt").input_ids
            assert torch.equal(ids_1, ids_2)
            assert type(e1) is type(e2)
            with torch.no_grad():
                o1, o2 = e1(ids_1, output_hidden_states=True), e2(ids_1, output_hidden_states=True)
            assert torch.equal(o1[0], o2[0]) and torch.equal(o1.hidden_states[-2], o2.hidden_states[-2]), enc


def test_sdxl_graph_on_the_single_file_gives_the_folders_pixels(tmp_path: Path,
                                                                  xl_files: dict[str, Path]) -> None:
    params = {"steps": 3, "seed": 5, "negative": "blurry"}
    runs = {}
    for label, model in (("folder", "builtin:tinyxl"), ("file", str(xl_files["tinyxl"]))):
        out = tmp_path / label
        options = RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False)
        result = Engine().run(GRAPHS / "sdxl.yaml", {**params, "model": model}, options)
        runs[label] = (result.outputs["latents"]["out"].samples, png(out / "sdxl.png"))
    assert (runs["file"][0] - runs["folder"][0]).abs().max().item() == 0.0
    assert np.array_equal(runs["file"][1], runs["folder"][1])


def test_refiner_graph_takes_the_refiner_single_file(tmp_path: Path, xl_files: dict[str, Path]) -> None:
    runs = []
    for model in ("builtin:tinyxl-refiner", str(xl_files["tinyxl-refiner"])):
        out = tmp_path / str(len(runs))
        options = RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False)
        params = {"refiner": model, "steps": 4, "refiner_start": 3}
        result = Engine().run(GRAPHS / "sdxl_refiner.yaml", params, options)
        runs.append((result.outputs["latents"]["out"].samples, png(out / "sdxl_refiner.png")))
    assert (runs[0][0] - runs[1][0]).abs().max().item() == 0.0
    assert np.array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("name,cross,ids,encoders", [("sdxl", 2048, 6, ("text_encoder", "text_encoder_2")),
                                                     ("sdxl_refiner", 1280, 5, ("text_encoder_2",))])
def test_shipped_real_sdxl_configs_are_the_real_architecture(name: str, cross: int, ids: int,
                                                             encoders: tuple[str, ...]) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    folder = CONFIGS_DIR / name
    index = json.loads((folder / "model_index.json").read_text())
    unet = UNet2DConditionModel.load_config(folder / "unet")
    assert unet["cross_attention_dim"] == cross and unet["addition_embed_type"] == "text_time"
    assert unet["projection_class_embeddings_input_dim"] == ids * unet["addition_time_embed_dim"] + 1280
    assert AutoencoderKL.load_config(folder / "vae")["scaling_factor"] == 0.13025
    scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(folder / "scheduler"))
    assert scheduler.config.timestep_spacing == "leading" and scheduler.config.steps_offset == 1
    widths = {e: CLIPTextConfig.from_pretrained(folder / e).hidden_size for e in encoders}
    assert sum(widths.values()) == cross  # penultimate states concatenated = the UNet's context width
    assert [e for e in ("text_encoder", "text_encoder_2") if (index.get(e) or [None])[0]] == list(encoders)
    assert index["text_encoder_2"][1] == "CLIPTextModelWithProjection"
    if name == "sdxl":  # 2.6 B: (320, 640, 1280), 1/2/10 transformer layers
        assert unet["block_out_channels"] == [320, 640, 1280]
        assert unet["transformer_layers_per_block"] == [1, 2, 10]
    with torch.device("meta"):  # the real shapes, no memory
        meta = UNet2DConditionModel.from_config(unet)
    # the base: SDXL's published 2,567,463,684 UNet parameters; the refiner: its ~2.3 B (this config's count)
    assert sum(p.numel() for p in meta.parameters()) == {"sdxl": 2_567_463_684,
                                                          "sdxl_refiner": 2_259_526_660}[name]


def test_real_sdxl_single_file_gets_clip_tokenizers(ctx: Any) -> None:
    """Real SDXL files carry no vocabulary: both tokenizers are CLIP's (shipped merges), tokenizer_2
    padding with "!" (id 0) as SDXL's does."""
    source = ModelSource("/x/sdxl.safetensors", "fp", "single_file", "sdxl", str(CONFIGS_DIR / "sdxl"),
                         None, "sdxl")
    one, two = load_tokenizer(source, "tokenizer"), load_tokenizer(source, "tokenizer_2")
    assert one.pad_token == "<|endoftext|>" and two.pad_token == "!" and two.pad_token_id == 0
    text = "a photo of a cat"
    assert one(text).input_ids == two(text).input_ids
    assert two(text, padding="max_length").input_ids[-1] == 0


def test_single_files_family_is_known_at_validation(tmp_path: Path, xl_files: dict[str, Path],
                                                    tiny_single_file: Path) -> None:
    """The cheap header read tells an SDXL file's family before anything loads, so mixing it with an
    SD1.x file (base SD1.x, refiner SDXL) is a validation error naming both nodes."""
    from nodegraph_diffusion.family_facts import path_family

    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    assert path_family(str(xl_files["tinyxl"]), tmp_path) == "sdxl"
    assert path_family(str(xl_files["tinyxl-refiner"]), tmp_path) == "sdxl"
    registry = build_registry()
    load_plan(GRAPHS / "sdxl_refiner.yaml", registry,
              {"model": str(xl_files["tinyxl"]), "refiner": str(xl_files["tinyxl-refiner"])})
    with pytest.raises(GraphError) as info:
        load_plan(GRAPHS / "sdxl_refiner.yaml", registry,
                  {"model": str(tiny_single_file), "refiner": str(xl_files["tinyxl-refiner"])})
    problems = info.value.problems
    assert problems and all(p.line for p in problems), problems
    text = str(info.value)
    assert "SD1.x latents from node 'noisy'" in text and "SDXL UNet from node 'refiner'" in text, text


def test_each_component_reads_only_its_own_keys(ctx: Any, xl_files: dict[str, Path]) -> None:
    """A real SDXL file is 6.9 GB: each component's load reads its own tensors, not the whole file."""
    from nodegraph_diffusion.file_loading import component_state
    from nodegraph_diffusion.loading import read_state_dict

    source = load_model(ctx, ModelRef(str(xl_files["tinyxl"]))).unet.source
    whole = set(read_state_dict(xl_files["tinyxl"], ctx))
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    parts = {c: set(component_state(source, c, ctx)) for c in names}
    heads = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
             "text_encoder": "conditioner.embedders.0.", "text_encoder_2": "conditioner.embedders.1."}
    for component, keys in parts.items():
        assert keys and all(k.startswith(heads[component]) for k in keys), component
    assert set().union(*parts.values()) == whole
