"""LoRA handles == diffusers' own LoRA loading (peft) on the same weights; weights, stacking, formats."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.api import InputError
from nodegraph_diffusion.loading import use_text_encoder, use_unet
from nodegraph_diffusion.model_nodes import load_lora, load_model
from nodegraph_diffusion.paths import LoraRef, ModelRef

ALPHA = 2.0  # Kohya copy: alpha 2 at rank 4 scales by 0.5; its up weights are doubled to compensate


def to_kohya(peft_file: Path, out: Path) -> Path:
    """Rewrite a diffusers/peft-format SD1 LoRA in Kohya/A1111 naming (lora_unet_*, lora_te_*, alpha)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in load_file(peft_file).items():
        part, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        if part == "text_encoder" and not module.startswith("text_model."):
            module = "text_model." + module
        name = ("lora_unet_" if part == "unet" else "lora_te_") + module.replace(".", "_")
        if kind.startswith("A"):
            state[f"{name}.lora_down.weight"] = value
            state[f"{name}.alpha"] = torch.tensor(ALPHA)
        else:
            rank = value.shape[1]
            state[f"{name}.lora_up.weight"] = value * (rank / ALPHA)
    save_file(state, out)
    return out


def perturbed(peft_file: Path, out: Path, seed: int) -> Path:
    """A second LoRA: same layout, different random weights."""
    g = torch.Generator().manual_seed(seed)
    save_file({k: torch.randn(v.shape, generator=g) * 0.3 for k, v in load_file(peft_file).items()}, out)
    return out


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor(421), torch.randn(2, 77, 32, generator=g)


def run_unet(unet: Any) -> torch.Tensor:
    x, t, e = inputs()
    with torch.no_grad():
        return unet(x, t, e).sample


def run_te(encoder: Any, tokenizer: Any) -> torch.Tensor:
    ids = tokenizer("a person in a red shirt", padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0]


@pytest.fixture
def model(ctx: Any) -> Any:
    return load_model(ctx, ModelRef("builtin:tinyworld"))


def test_lora_equals_pipeline_load_lora_weights(ctx: Any, model: Any, tiny_pipe: Any,
                                                style_lora: Path) -> None:
    with use_unet(ctx, model.unet) as unet:
        base = run_unet(unet)
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef("builtin:tinyworld-style"), 0.8, 0.6)
    tiny_pipe.load_lora_weights(str(style_lora), adapter_name="style")
    tiny_pipe.set_adapters(["style"], adapter_weights=[{"unet": 0.8, "text_encoder": 0.6}])
    with use_unet(ctx, patched.unet) as unet:
        ours = run_unet(unet)
    with use_text_encoder(ctx, patched.text_encoder) as (tokenizer, encoder):
        ours_te = run_te(encoder, tokenizer)
    assert (ours - run_unet(tiny_pipe.unet)).abs().max().item() == 0.0
    assert (ours_te - run_te(tiny_pipe.text_encoder, tiny_pipe.tokenizer)).abs().max().item() == 0.0
    assert (ours - base).abs().max().item() > 1e-3  # the LoRA acts


def test_weight_zero_and_removal_give_base_exactly(ctx: Any, model: Any) -> None:
    with use_unet(ctx, model.unet) as unet:
        base = run_unet(unet)
    on = load_lora(ctx, model.unet, model.text_encoder, LoraRef("builtin:tinyworld-style"), 1.0, 1.0)
    off = load_lora(ctx, model.unet, model.text_encoder, LoraRef("builtin:tinyworld-style"), 0.0, 0.0)
    with use_unet(ctx, on.unet) as unet:
        assert not torch.equal(run_unet(unet), base)
    with use_unet(ctx, off.unet) as unet:
        assert torch.equal(run_unet(unet), base)
    with use_unet(ctx, model.unet) as unet:  # the same resident UNet, no LoRA in the handle
        assert torch.equal(run_unet(unet), base)
    with use_text_encoder(ctx, model.text_encoder) as (tokenizer, encoder):
        te_base = run_te(encoder, tokenizer)
    with use_text_encoder(ctx, on.text_encoder) as (tokenizer, encoder):
        assert not torch.equal(run_te(encoder, tokenizer), te_base)
    with use_text_encoder(ctx, off.text_encoder) as (tokenizer, encoder):
        assert torch.equal(run_te(encoder, tokenizer), te_base)


def test_changing_weight_does_not_reload_base(ctx: Any, model: Any) -> None:
    fp = model.unet.source.fingerprint
    outs = []
    for weight in (0.25, 0.5, 1.0, 0.5):
        ref = LoraRef("builtin:tinyworld-style")
        patched = load_lora(ctx, model.unet, model.text_encoder, ref, weight, weight)
        with use_unet(ctx, patched.unet) as unet:
            outs.append(run_unet(unet))
        assert len(unet.peft_config) == 1  # the adapter was loaded once
    assert ctx.resources.load_count(f"{fp}:unet") == 1
    assert not torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])


def test_two_loras_stack_like_pipeline(ctx: Any, model: Any, tiny_pipe: Any, style_lora: Path,
                                       tmp_path: Path) -> None:
    second = perturbed(style_lora, tmp_path / "second.safetensors", seed=5)
    one = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(style_lora)), 0.7, 1.0)
    two = load_lora(ctx, one.unet, one.text_encoder, LoraRef(str(second)), -0.4, 0.5)
    assert len(two.unet.loras) == 2
    tiny_pipe.load_lora_weights(str(style_lora), adapter_name="a")
    tiny_pipe.load_lora_weights(str(second), adapter_name="b")
    tiny_pipe.set_adapters(["a", "b"], adapter_weights=[{"unet": 0.7, "text_encoder": 1.0},
                                                       {"unet": -0.4, "text_encoder": 0.5}])
    with use_unet(ctx, two.unet) as unet:
        stacked = run_unet(unet)
    assert (stacked - run_unet(tiny_pipe.unet)).abs().max().item() == 0.0
    with use_text_encoder(ctx, two.text_encoder) as (tokenizer, encoder):
        assert torch.equal(run_te(encoder, tokenizer), run_te(tiny_pipe.text_encoder, tiny_pipe.tokenizer))
    with use_unet(ctx, one.unet) as unet:  # dropping the second LoRA from the handle drops its effect
        assert not torch.equal(run_unet(unet), stacked)


def test_kohya_file_equals_peft_file(ctx: Any, model: Any, style_lora: Path, tmp_path: Path) -> None:
    kohya = to_kohya(style_lora, tmp_path / "style_kohya.safetensors")
    assert any(k.startswith("lora_te_text_model_") for k in load_file(kohya))
    a = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(style_lora)), 0.9, 0.9)
    b = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(kohya)), 0.9, 0.9)
    with use_unet(ctx, a.unet) as unet:
        peft_out = run_unet(unet)
    with use_unet(ctx, b.unet) as unet:
        kohya_out = run_unet(unet)
    with use_text_encoder(ctx, a.text_encoder) as (tokenizer, encoder):
        peft_te = run_te(encoder, tokenizer)
    with use_text_encoder(ctx, b.text_encoder) as (tokenizer, encoder):
        kohya_te = run_te(encoder, tokenizer)
    assert (peft_out - kohya_out).abs().max().item() == 0.0
    assert (peft_te - kohya_te).abs().max().item() == 0.0


def test_bad_lora_files(ctx: Any, model: Any, tmp_path: Path, style_lora: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(style_lora.read_bytes()[:-100])
    with pytest.raises(InputError, match="broken.safetensors"):
        load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(broken)))
    pickled = tmp_path / "style.pt"
    torch.save(load_file(style_lora), pickled)
    with pytest.raises(InputError, match="--allow-pickle"):
        load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(pickled)))
    not_lora = tmp_path / "weights.safetensors"
    save_file({"conv.weight": torch.ones(2, 2)}, not_lora)
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(not_lora)))
    with pytest.raises(InputError, match="LoRA"), use_unet(ctx, patched.unet):
        pass


def test_handles_stay_hashable_and_frozen(ctx: Any, model: Any) -> None:
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef("builtin:tinyworld-style"), 0.5, 0.5)
    assert hash(patched.unet) != hash(model.unet) and model.unet.loras == ()
    assert replace(patched.unet.loras[0], unet_weight=0.5) == patched.unet.loras[0]
