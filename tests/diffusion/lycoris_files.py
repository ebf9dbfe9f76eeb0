"""Write LyCORIS LoHa / LoKr files in Kohya naming with random non-zero factors, and their ΔW by hand.

The deltas follow LyCORIS's documented formulas, computed here without peft:
LoHa ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · alpha / r; LoKr ΔW = kron(w1, w2) · alpha / r, scale 1
when both factors are full.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

UNET_LAYERS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",  # Linear
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",  # Linear (cross-attention, 32 -> 32)
    "down_blocks.0.attentions.0.proj_in",  # 1x1 Conv2d
    "down_blocks.0.resnets.0.conv1",  # 3x3 Conv2d
    "mid_block.attentions.0.transformer_blocks.0.ff.net.2",  # Linear
)
TE_LAYERS = ("encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1")


def _kohya(part: str, module: str) -> str:
    name = module if part == "unet" else "text_model." + module
    return ("lora_unet_" if part == "unet" else "lora_te_") + name.replace(".", "_")


def _weights(model: Any, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    return {name: modules[name].weight.detach() for name in layers}


Layers = Mapping[str, tuple[str, ...]]  # part -> module paths
Namer = Callable[[str, str], str]  # (part, module path) -> Kohya name
SD1_LAYERS: Layers = {"unet": UNET_LAYERS, "text_encoder": TE_LAYERS}


def write_loha(path: Path, parts: dict[str, Any], seed: int, rank: int = 2, alpha: float = 1.5,
               layers: Layers = SD1_LAYERS, name: Namer = _kohya) -> dict[tuple[str, str], torch.Tensor]:
    """A LoHa file for `parts` ({'unet': model, 'text_encoder': model}); returns ΔW per (part, module).
    `layers` and `name` pick the modules and their Kohya names (SD1's by default)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    deltas: dict[tuple[str, str], torch.Tensor] = {}
    for part, model in parts.items():
        for module, w in _weights(model, layers[part]).items():
            out_dim, in_flat = w.shape[0], w[0].numel()
            t = {k: torch.randn(s, generator=g) * 0.4 for k, s in (
                ("hada_w1_a", (out_dim, rank)), ("hada_w1_b", (rank, in_flat)),
                ("hada_w2_a", (out_dim, rank)), ("hada_w2_b", (rank, in_flat)))}
            key = name(part, module)
            state.update({f"{key}.{k}": v for k, v in t.items()})
            state[f"{key}.alpha"] = torch.tensor(alpha)
            delta = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * (alpha / rank)
            deltas[(part, module)] = delta.reshape(w.shape)
    save_file(state, str(path))
    return deltas


def _factorization(dimension: int) -> tuple[int, int]:
    """LyCORIS's default factorisation (factor -1): the divisor pair nearest the square root, small first."""
    m = max(d for d in range(1, int(dimension ** 0.5) + 1) if dimension % d == 0)
    return m, dimension // m


def write_lokr(path: Path, parts: dict[str, Any], seed: int, rank: int = 2, alpha: float = 3.0,
               full: tuple[str, ...] = (), layers: Layers = SD1_LAYERS,
               name: Namer = _kohya) -> dict[tuple[str, str], torch.Tensor]:
    """A LoKr file: full w1, low-rank w2 (w2_a @ w2_b) except for `full` modules (both factors full,
    where LyCORIS's scale is 1 whatever alpha says); returns ΔW per (part, module)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    deltas: dict[tuple[str, str], torch.Tensor] = {}
    for part, model in parts.items():
        for module, w in _weights(model, layers[part]).items():
            out_l, out_k = _factorization(w.shape[0])
            in_m, in_n = _factorization(w.shape[1])
            kernel = tuple(w.shape[2:])
            key = name(part, module)
            w1 = torch.randn((out_l, in_m), generator=g) * 0.4
            state[f"{key}.lokr_w1"] = w1
            state[f"{key}.alpha"] = torch.tensor(alpha)
            if module in full:
                w2 = torch.randn((out_k, in_n, *kernel), generator=g) * 0.4
                state[f"{key}.lokr_w2"] = w2
                scale = 1.0
            else:
                a = torch.randn((out_k, rank), generator=g) * 0.4
                b = torch.randn((rank, in_n * int(torch.tensor(kernel).prod().item() if kernel else 1)),
                                generator=g) * 0.4
                state[f"{key}.lokr_w2_a"], state[f"{key}.lokr_w2_b"] = a, b
                w2 = (a @ b).reshape(out_k, in_n, *kernel)
                scale = alpha / rank
            w1_full = w1.reshape(out_l, in_m, *([1] * len(kernel)))
            deltas[(part, module)] = torch.kron(w1_full, w2) * scale
            assert deltas[(part, module)].shape == w.shape
    save_file(state, str(path))
    return deltas


def merge(parts: dict[str, Any], deltas: dict[tuple[str, str], torch.Tensor], weight: float) -> None:
    """W += weight · ΔW, in place, on the reference models."""
    with torch.no_grad():
        for (part, module), delta in deltas.items():
            layer = dict(parts[part].named_modules())[module]
            layer = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer  # under a LoRA
            layer.weight.add_(weight * delta)
