"""Transformer-only files for the tests, written from builtin:tinyflux's transformer.

The BFL names are written from the layout's definition (as flux_lora_files.py does for LoRAs), not by
the converter under test: a double block's image/text q, k, v are one `qkv` layer, a single block's q,
k, v and MLP input one `linear1` ([q; k; v; mlp] rows), the qk-norm scales are `*.norm.query_norm.scale`
/ `key_norm.scale`, and the final layer's adaLN modulation puts shift before scale where diffusers'
`norm_out.linear` puts scale first. fp8 copies cast every 2-D weight to float8_e4m3fn (as
flux1-dev-fp8.safetensors stores them; biases and norms kept). GGUF copies are written as city96's
ComfyUI-GGUF convert.py writes them: the `gguf` package's writer, 2-D weights quantized with
`gguf.quants.quantize` (rows of whole 32-value blocks), the rest F32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from flux_lora_files import DOUBLE, SINGLE, SWAPPED, TINYFLUX, TOP
from safetensors.torch import save_file

NORMS_DOUBLE = {"img_attn.norm.query_norm.scale": "attn.norm_q.weight",
                "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
                "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
                "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight"}
NORMS_SINGLE = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}


def tiny_transformer(model: Path = TINYFLUX) -> Any:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel.from_pretrained(model, subfolder="transformer", local_files_only=True)


def _swap(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first])


def to_bfl(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers Flux transformer state in BFL layout (with `prefix`: ComfyUI's model.diffusion_model.)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return state[key]

    blocks = {int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")}
    singles = {int(k.split(".")[1]) for k in state if k.startswith("single_transformer_blocks.")}
    groups = [(f"double_blocks.{i}.", f"transformer_blocks.{i}.", DOUBLE, NORMS_DOUBLE)
              for i in sorted(blocks)]
    groups += [(f"single_blocks.{i}.", f"single_transformer_blocks.{i}.", SINGLE, NORMS_SINGLE)
               for i in sorted(singles)]
    groups.append(("", "", {k: [v] for k, v in TOP.items()}, {}))
    for bfl_head, head, fused, norms in groups:
        for bfl, parts in fused.items():
            for kind in ("weight", "bias"):
                keys = [f"{head}{p}.{kind}" for p in parts]
                if not all(k in state for k in keys):
                    continue
                value = torch.cat([take(k) for k in keys])
                out[f"{prefix}{bfl_head}{bfl}.{kind}"] = _swap(value) if head + parts[0] in SWAPPED else value
        for bfl, name in norms.items():
            out[f"{prefix}{bfl_head}{bfl}"] = take(head + name)
    left = sorted(set(state) - used)
    assert not left, f"not written: {left}"
    return {k: v.contiguous() for k, v in out.items()}


def fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every 2-D weight in float8_e4m3fn (flux1-dev-fp8 style), the rest as it is."""
    return {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in state.items()}


def write_safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_gguf(path: Path, state: dict[str, torch.Tensor], quant: str = "Q8_0", rest: str = "F32") -> Path:
    """A GGUF file of `state` (arch "flux", as city96's convert.py tags it), 2-D weights as `quant`, the
    other tensors as `rest` (F32 or F16, as city96 keeps small ones)."""
    import gguf
    import numpy as np

    qtype = getattr(gguf.GGMLQuantizationType, quant)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    writer = gguf.GGUFWriter(str(path), arch="flux")
    for name, tensor in state.items():
        data = tensor.detach().to(torch.float32).numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            kind = getattr(gguf.GGMLQuantizationType, rest)
            plain = data.astype(np.float16 if rest == "F16" else np.float32)
            writer.add_tensor(name, np.ascontiguousarray(plain), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def sd3_to_stability(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers SD3 transformer state in Stability's layout (sd3.5_medium.safetensors's
    `joint_blocks.*`), as flow_files writes SD3.5 single files."""
    from tests.diffusion.flow_files import sd3_transformer_to_original

    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks."))
    return {prefix + k: v.contiguous() for k, v in sd3_transformer_to_original(state, blocks).items()}
