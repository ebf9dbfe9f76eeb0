"""Model references, formats, residency (one copy per process), pickle refusal, corrupt files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.api import InputError
from nodegraph_diffusion.loading import use_text_encoder, use_unet, use_vae
from nodegraph_diffusion.model_nodes import load_model, load_vae
from nodegraph_diffusion.paths import ModelRef, resolve_model_ref


def unet_out(unet: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor(321), e).sample


# ---- references -------------------------------------------------------------------------------------------

def test_builtin_ref(ctx: Any, tiny_dir: Path) -> None:
    assert resolve_model_ref("builtin:tinyworld", ctx, "checkpoint") == tiny_dir


def test_unknown_builtin_lists_builtins(ctx: Any) -> None:
    with pytest.raises(InputError, match="tinyworld") as err:
        resolve_model_ref("builtin:nope", ctx, "checkpoint")
    assert err.value.field == "path"


def test_relative_to_graph_file(make_ctx: Any, tmp_path: Path, tiny_single_file: Path) -> None:
    (tmp_path / "weights").mkdir()
    shutil.copy(tiny_single_file, tmp_path / "weights" / "m.safetensors")
    ctx = make_ctx(graph_file=tmp_path / "g.yaml")
    assert resolve_model_ref("weights/m.safetensors", ctx) == tmp_path / "weights" / "m.safetensors"


def test_bare_name_in_model_dirs_by_kind(make_ctx: Any, tmp_path: Path, tiny_single_file: Path) -> None:
    root = tmp_path / "comfy"
    (root / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_single_file, root / "models" / "checkpoints" / "tiny.safetensors")
    ctx = make_ctx(model_dirs=(root,))
    expected = root / "models" / "checkpoints" / "tiny.safetensors"
    assert resolve_model_ref("tiny", ctx, "checkpoint") == expected
    with pytest.raises(InputError, match="loras"):
        resolve_model_ref("tiny", ctx, "lora")


def test_env_search_path(make_ctx: Any, tmp_path: Path, tiny_single_file: Path, monkeypatch: Any) -> None:
    (tmp_path / "env" / "loras").mkdir(parents=True)
    target = tmp_path / "env" / "loras" / "x.safetensors"
    shutil.copy(tiny_single_file, target)
    monkeypatch.setenv("NODEGRAPH_MODELS", str(tmp_path / "env"))
    assert resolve_model_ref("x.safetensors", make_ctx(), "lora") == target


def test_missing_names_ref_and_places(ctx: Any) -> None:
    with pytest.raises(InputError) as err:
        resolve_model_ref("dreamshaper_8.safetensors", ctx, "checkpoint")
    assert "dreamshaper_8.safetensors" in str(err.value) and "searched" in str(err.value)
    assert err.value.field == "path"


def test_model_ref_fingerprint_follows_content(tmp_path: Path, tiny_single_file: Path) -> None:
    target = tmp_path / "m.safetensors"
    shutil.copy(tiny_single_file, target)
    before = ModelRef.__nodegraph_fingerprint__("m.safetensors", tmp_path)
    state = load_file(target)
    first = sorted(state)[0]
    state[first] = state[first] + 1
    save_file(state, target)
    assert ModelRef.__nodegraph_fingerprint__("m.safetensors", tmp_path) != before
    assert ModelRef.__nodegraph_fingerprint__("absent.safetensors", tmp_path) == "unresolved"


def test_model_ref_fingerprint_follows_place(tmp_path: Path, tiny_single_file: Path) -> None:
    """Loaders put absolute paths into their handles, so a disk-cached handle must not outlive the
    place it names: the same bytes elsewhere (a moved checkout) key differently. Before this, a moved
    clone's runs were served handles naming the deleted folder and failed at the sampler."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(tiny_single_file, a / "m.safetensors")
    shutil.copy(tiny_single_file, b / "m.safetensors")
    assert ModelRef.__nodegraph_fingerprint__("m.safetensors", a) != ModelRef.__nodegraph_fingerprint__(
        "m.safetensors", b)


def test_model_ref_in_models_folder_keys_on_content(tmp_path: Path, tiny_single_file: Path) -> None:
    """A file found only through `--models` (the run's search folders) keys on its content too: the
    executor passes the folders, so replacing the weights there re-runs the loader."""
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    target = models / "checkpoints" / "m.safetensors"
    shutil.copy(tiny_single_file, target)
    graph_dir = tmp_path / "graph"
    graph_dir.mkdir()
    assert ModelRef.__nodegraph_fingerprint__("m.safetensors", graph_dir) == "unresolved"
    before = ModelRef.__nodegraph_fingerprint__("m.safetensors", graph_dir, search_dirs=(models,))
    assert before != "unresolved"
    state = load_file(target)
    first = sorted(state)[0]
    state[first] = state[first] + 1
    save_file(state, target)
    assert ModelRef.__nodegraph_fingerprint__("m.safetensors", graph_dir, search_dirs=(models,)) != before


# ---- loading and residency ------------------------------------------------------------------------

def test_load_model_handles_equal_pipeline(ctx: Any, tiny_pipe: Any) -> None:
    model = load_model(ctx, ModelRef("builtin:tinyworld"))
    assert model.scheduler.name == "default"
    assert dict(model.scheduler.base_config)["_class_name"] == "PNDMScheduler"
    with use_unet(ctx, model.unet) as unet:
        assert torch.equal(unet_out(unet), unet_out(tiny_pipe.unet))
    with use_vae(ctx, model.vae) as vae:
        assert vae is not tiny_pipe.vae and vae.config.scaling_factor == 0.18215
    with use_text_encoder(ctx, model.text_encoder) as (tokenizer, encoder):
        ids = tokenizer("a red circle", return_tensors="pt").input_ids
        assert torch.equal(encoder(ids)[0], tiny_pipe.text_encoder(ids)[0])


def test_one_copy_per_process(ctx: Any) -> None:
    a = load_model(ctx, ModelRef("builtin:tinyworld"))
    b = load_model(ctx, ModelRef("builtin:tinyworld"))
    with use_unet(ctx, a.unet) as u1, use_unet(ctx, b.unet) as u2:
        assert u1 is u2
    with use_unet(ctx, a.unet):
        pass
    fp = a.unet.source.fingerprint
    assert ctx.resources.load_count(f"{fp}:unet") == 1
    assert ctx.resources.load_count(fp) == 1


def test_single_file_equals_folder(ctx: Any, tiny_single_file: Path, tiny_pipe: Any) -> None:
    model = load_model(ctx, ModelRef(str(tiny_single_file)))
    assert model.unet.source.format == "single_file" and model.unet.source.base == "tinyworld"
    with use_unet(ctx, model.unet) as unet:
        assert torch.equal(unet_out(unet), unet_out(tiny_pipe.unet))
    with use_text_encoder(ctx, model.text_encoder) as (tokenizer, encoder):
        ids = tokenizer("a blue square", return_tensors="pt").input_ids
        assert torch.equal(encoder(ids)[0], tiny_pipe.text_encoder(ids)[0])
    with use_vae(ctx, model.vae) as vae:
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        assert torch.equal(vae.decode(z).sample, tiny_pipe.vae.decode(z).sample)


def test_load_vae_from_folder_and_model(ctx: Any, tiny_dir: Path) -> None:
    from_folder = load_vae(ctx, ModelRef(str(tiny_dir / "vae")))
    from_model = load_vae(ctx, ModelRef("builtin:tinyworld"))
    assert from_folder.source.format == "diffusers_component"
    with use_vae(ctx, from_folder) as a, use_vae(ctx, from_model) as b:
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a.decode(z).sample, b.decode(z).sample)


def test_pickle_refused_unless_allowed(make_ctx: Any, tmp_path: Path, tiny_single_file: Path,
                                       tiny_pipe: Any) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(tiny_single_file)}, ckpt)
    with pytest.raises(InputError, match="refusing to load pickled weights.*--allow-pickle"):
        load_model(make_ctx(), ModelRef(str(ckpt)))
    allowed = make_ctx(allow_pickle=True)
    model = load_model(allowed, ModelRef(str(ckpt)))
    with use_unet(allowed, model.unet) as unet:
        assert torch.equal(unet_out(unet), unet_out(tiny_pipe.unet))


def test_truncated_safetensors_names_the_path(ctx: Any, tmp_path: Path, tiny_single_file: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_single_file.read_bytes()[:-1000])
    with pytest.raises(InputError, match="broken.safetensors") as err:
        load_model(ctx, ModelRef(str(broken)))
    assert err.value.field == "path"
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="garbage.safetensors"):
        load_model(ctx, ModelRef(str(garbage)))


def test_unsupported_family_refused(ctx: Any, tmp_path: Path) -> None:
    sdxl = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.ones(4),
               "model.diffusion_model.input_blocks.0.0.weight": torch.ones(4)}, sdxl)
    with pytest.raises(InputError, match="SDXL"):
        load_model(ctx, ModelRef(str(sdxl)))
    odd = tmp_path / "odd.safetensors"
    save_file({"something.else": torch.ones(2)}, odd)
    with pytest.raises(InputError, match="supported family"):
        load_model(ctx, ModelRef(str(odd)))


def test_real_sd15_single_file_gets_the_shipped_clip_tokenizer(ctx: Any, tmp_path: Path) -> None:
    from nodegraph_diffusion.loading import CONFIGS_DIR, load_tokenizer
    from nodegraph_diffusion.types import ModelSource

    source = ModelSource("/x/model.safetensors", "fp", "single_file", "sd15", str(CONFIGS_DIR / "sd15"))
    tokenizer = load_tokenizer(source)
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    (tmp_path / "tok").mkdir()
    given = ModelSource("/x/model.safetensors", "fp", "single_file", "sd15", str(CONFIGS_DIR / "sd15"),
                        str(tmp_path / "tok"))
    with pytest.raises(InputError, match="neither vocab.json") as err:  # a named folder: used or refused
        load_tokenizer(given)
    assert err.value.field == "tokenizer"


def test_shipped_sd15_config_matches_ldm_layout() -> None:
    """The sd15 config folder builds SD1.5's exact architecture: our original-layout names for it are
    the names diffusers' own converter maps back to every parameter (checked on the meta device)."""
    import json

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from nodegraph_diffusion.loading import CONFIGS_DIR
    from nodegraph_diffusion.single_file import (
        UNET_PREFIX,
        VAE_PREFIX,
        detect_family,
        unet_key_to_original,
        vae_key_to_original,
    )

    unet_config = json.loads((CONFIGS_DIR / "sd15" / "unet" / "config.json").read_text())
    vae_config = json.loads((CONFIGS_DIR / "sd15" / "vae" / "config.json").read_text())
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD1.5's UNet
    unet_sd = unet.state_dict()
    original = {UNET_PREFIX + unet_key_to_original(k, unet_config): v for k, v in unet_sd.items()}
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in original  # SD1.5's real names
    assert "model.diffusion_model.input_blocks.11.0.out_layers.3.weight" in original
    assert set(convert_ldm_unet_checkpoint(original, unet_config)) == set(unet_sd)
    vae_sd = vae.state_dict()
    vae_original = {VAE_PREFIX + vae_key_to_original(k, 4): (v[:, :, None, None] if v.ndim == 2 else v)
                    for k, v in vae_sd.items()}
    assert set(convert_ldm_vae_checkpoint(vae_original, vae_config)) == set(vae_sd)
    shapes = {k: tuple(v.shape) for k, v in original.items()}
    keys = set(shapes) | {"cond_stage_model.transformer.text_model.final_layer_norm.weight"}
    assert detect_family(keys, shapes) == "sd15"


def test_tokenizer_input_overrides_and_joins_the_key(ctx: Any, tiny_single_file: Path,
                                                     tiny_dir: Path) -> None:
    from nodegraph_diffusion.loading import component_key
    from nodegraph_diffusion.paths import TokenizerRef

    model = load_model(ctx, ModelRef(str(tiny_single_file)), TokenizerRef(str(tiny_dir / "tokenizer")))
    assert model.text_encoder.source.tokenizer_dir == str((tiny_dir / "tokenizer").resolve())
    key = component_key(model.text_encoder.source, "tokenizer")
    assert key != f"{model.unet.source.fingerprint}:tokenizer"
    with use_text_encoder(ctx, model.text_encoder) as (tokenizer, _):
        red = tokenizer.convert_tokens_to_ids("red</w>")
        assert tokenizer("red", add_special_tokens=False).input_ids == [red]
