"""Flux.1 LoRA files for the tests: random non-zero peft adapters on builtin:tinyflux (transformer and
CLIP-L), saved in diffusers layout, and the same weights rewritten in the Kohya and BFL/ComfyUI layouts.

The original (BFL) Flux.1 names are written here from the layout's definition, not by any converter
under test: a double block's image/text q, k, v are one `qkv` layer, a single block's q, k, v and MLP
input one `linear1` ([q; k; v; mlp] rows); a LoRA fused over n layers of rank r each has the n down
matrices stacked (rank n·r) and a block-diagonal up matrix. The final layer's adaLN modulation puts
shift before scale where diffusers' `norm_out.linear` puts scale first (its B rows are swapped).
Kohya keys: `lora_unet_` + the BFL name with `_` for `.`, `.lora_down.weight`/`.lora_up.weight`,
`.alpha`; BFL/ComfyUI keys: `diffusion_model.` + the BFL name, `.lora_A.weight`/`.lora_B.weight`,
`.alpha`; CLIP-L: `lora_te1_text_model_…` / `text_encoders.clip_l.transformer.text_model.…`.
The copies store alpha = rank/2 (scale 1/2) and twice the down matrix, so they mean the same LoRA.
"""

from __future__ import annotations

from pathlib import Path

import torch
from nodegraph_diffusion.paths import BUILTIN_DIR
from safetensors.torch import load_file, save_file

TINYFLUX = BUILTIN_DIR / "tinyflux"
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
DOUBLE = {"img_attn.qkv": ["attn.to_q", "attn.to_k", "attn.to_v"], "img_attn.proj": ["attn.to_out.0"],
          "txt_attn.qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
          "txt_attn.proj": ["attn.to_add_out"], "img_mlp.0": ["ff.net.0.proj"], "img_mlp.2": ["ff.net.2"],
          "txt_mlp.0": ["ff_context.net.0.proj"], "txt_mlp.2": ["ff_context.net.2"],
          "img_mod.lin": ["norm1.linear"], "txt_mod.lin": ["norm1_context.linear"]}
SINGLE = {"linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], "linear2": ["proj_out"],
          "modulation.lin": ["norm.linear"]}
TOP = {"img_in": "x_embedder", "txt_in": "context_embedder",
       "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
       "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
       "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
       "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
       "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
       "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
       "final_layer.adaLN_modulation.1": "norm_out.linear", "final_layer.linear": "proj_out"}
SWAPPED = {"norm_out.linear"}  # [shift; scale] in BFL, [scale; shift] in diffusers


def bfl_modules(double: int = 1, single: int = 1, top: bool = True) -> dict[str, list[str]]:
    """BFL module name -> the diffusers transformer modules it fuses (in its output-row order)."""
    out: dict[str, list[str]] = {}
    for i in range(double):
        out.update({f"double_blocks.{i}.{k}": [f"transformer_blocks.{i}.{m}" for m in v]
                    for k, v in DOUBLE.items()})
    for i in range(single):
        out.update({f"single_blocks.{i}.{k}": [f"single_transformer_blocks.{i}.{m}" for m in v]
                    for k, v in SINGLE.items()})
    if top:
        out.update({k: [v] for k, v in TOP.items()})
    return out


def write_diffusers_lora(out: Path, seed: int, rank: int = 4, scale: float = 0.3, text_encoder: bool = True,
                         model: Path = TINYFLUX) -> Path:
    """A LoRA on every layer BFL names (and CLIP-L's attention), random A *and* B, diffusers layout."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    transformer = FluxTransformer2DModel.from_pretrained(model, subfolder="transformer",
                                                         local_files_only=True)
    targets = sorted({m for mods in bfl_modules().values() for m in mods})
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
    models = [transformer]
    te = None
    if text_encoder:
        te = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", local_files_only=True)
        te.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TE_TARGETS))
        models.append(te)
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for part in models:
            for name, param in sorted(part.named_parameters()):
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    FluxPipeline.save_lora_weights(
        out.parent, transformer_lora_layers=get_peft_model_state_dict(transformer),
        text_encoder_lora_layers=get_peft_model_state_dict(te) if te is not None else None,
        weight_name=out.name, safe_serialization=True)
    return out


def _swap(weight: torch.Tensor) -> torch.Tensor:
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def to_original(peft_file: Path, out: Path, layout: str, skip: tuple[str, ...] = ()) -> Path:
    """Rewrite a diffusers-layout Flux LoRA in the "kohya" or "bfl" layout (see the module docstring);
    BFL modules named in `skip` are left out."""
    state = load_file(peft_file)
    new: dict[str, torch.Tensor] = {}

    def put(name: str, down: torch.Tensor, up: torch.Tensor, text: bool = False) -> None:
        if layout == "kohya":
            key = ("lora_te1_text_model_" if text else "lora_unet_") + name.replace(".", "_")
            down_key, up_key = f"{key}.lora_down.weight", f"{key}.lora_up.weight"
        else:
            key = ("text_encoders.clip_l.transformer.text_model." if text else "diffusion_model.") + name
            down_key, up_key = f"{key}.lora_A.weight", f"{key}.lora_B.weight"
        new[down_key] = down * 2
        new[up_key] = up.contiguous()
        new[f"{key}.alpha"] = torch.tensor(down.shape[0] / 2)

    for name, modules in bfl_modules().items():
        if name in skip:
            continue
        downs = [state[f"transformer.{m}.lora_A.weight"] for m in modules]
        ups = [state[f"transformer.{m}.lora_B.weight"] for m in modules]
        ups = [_swap(u) if m in SWAPPED else u for m, u in zip(modules, ups, strict=True)]
        put(name, torch.cat(downs), torch.block_diag(*ups))
    for key in sorted(k for k in state if k.startswith("text_encoder.") and ".lora_A." in k):
        module = key.removeprefix("text_encoder.").removesuffix(".lora_A.weight").removeprefix("text_model.")
        put(module, state[key], state[key.replace(".lora_A.", ".lora_B.")], text=True)
    save_file(new, str(out))
    return out
