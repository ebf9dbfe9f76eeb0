"""LyCORIS LoHa and LoKr files (Kohya naming) -> peft LoHa / LoKr adapters on resident models.

peft implements both (`LoHaConfig`, `LoKrConfig`, with LyCORIS's own formulas); this module only maps
a file onto them — module names, ranks, alphas, which factors are full or low-rank — and lets peft
inject and compute. So a LyCORIS file is one more named adapter, activated, weighted and disabled by
`lora.activate_loras` exactly like a LoRA (diffusers' `set_adapters` calls each peft layer's
`set_scale`, which LoHa/LoKr layers implement as `weight * alpha / r`).

The file layout (as LyCORIS and Kohya's sd-scripts write it), per module `lora_unet_<name>` or
`lora_te_<name>` (the module's dotted path with `_` for `.`):
- LoHa: `hada_w1_a` (out, r), `hada_w1_b` (r, in·k·k), `hada_w2_a`, `hada_w2_b`, `alpha`;
  ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · alpha / r.
- LoKr: `lokr_w1` or `lokr_w1_a`/`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`/`lokr_w2_b`, `alpha`;
  ΔW = kron(w1, w2) · alpha / r, where LyCORIS uses scale 1 when both factors are full matrices
  (we then give peft alpha = r). peft decides from `r` which factor is low-rank with the same rule
  LyCORIS uses, so the rank we pass reproduces the file's layout (checked, else a clear error).
Tucker-decomposed convolutions (`hada_t1`, `lokr_t2`) and DoRA scales are refused with a message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nodegraph.api import InputError

LOHA_PARAMS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
UNSUPPORTED = ("hada_t1", "hada_t2", "lokr_t2", "dora_scale")
PREFIXES = {"unet": ("lora_unet_",), "text_encoder": ("lora_te_", "lora_te1_"),
            "text_encoder_2": ("lora_te2_",)}  # SDXL's second encoder


def lycoris_kind(keys: set[str] | list[str]) -> str | None:
    """'loha', 'lokr' or None (not a LyCORIS LoHa/LoKr file), from tensor names alone."""
    params = {k.rsplit(".", 1)[-1] for k in keys}
    loha, lokr = bool(params & set(LOHA_PARAMS)), bool(params & set(LOKR_PARAMS))
    if loha and lokr:
        return "mixed"
    return "loha" if loha else "lokr" if lokr else None


def _module_index(model: Any) -> dict[str, str]:
    """Kohya name (dots as underscores) -> module path, for every Linear/Conv2d of `model`.

    Text-encoder names also match with the `text_model_` prefix that transformers >= 5.6 dropped.
    A layer already wrapped by an adapter (another LoRA/LyCORIS file) is found under its own path,
    not its wrapped `base_layer`.
    """
    import torch

    index: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            name = re.sub(r"\.base_layer\b", "", name)
            flat = name.replace(".", "_")
            index[flat] = name
            index.setdefault("text_model_" + flat, name)
    return index


def _diffusers_unet_module(kohya: str, index: dict[str, str]) -> str | None:
    """The UNet module a Kohya name means by diffusers' own LoRA key converters, for names that are not
    the module path with `_` for `.`: SDXL's original-layout resnet layers (`in_layers_2` = conv1,
    `emb_layers_1` = time_emb_proj, `skip_connection` = conv_shortcut, ...)."""
    from diffusers.loaders.lora_conversion_utils import _convert_unet_lora_key
    from diffusers.utils import convert_unet_state_dict_to_peft

    key = _convert_unet_lora_key(f"lora_unet_{kohya}.lora_down.weight")
    (peft_key,) = convert_unet_state_dict_to_peft({key: None})
    module = peft_key.rsplit(".lora_A.", 1)[0]
    return module if module in index.values() else None


def _group(state: dict[str, Any], part: str, model: Any, path: Path) -> dict[str, dict[str, Any]]:
    """module path -> {param: tensor} for the file's modules of `part` (a key of PREFIXES)."""
    index = _module_index(model)
    groups: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        prefix = next((p for p in PREFIXES[part] if key.startswith(p)), None)
        if prefix is None:
            continue
        kohya, param = key[len(prefix):].rsplit(".", 1)
        if param in UNSUPPORTED:
            raise InputError(f"'{path}': '{key}' (Tucker-decomposed convolution or DoRA) is not supported; "
                             "re-export the LyCORIS file without use_tucker / dora", field="path")
        module = index.get(kohya) or (_diffusers_unet_module(kohya, index) if part == "unet" else None)
        if module is None:
            raise InputError(f"'{path}': '{key}' names no layer of this model's {part} (a file for another "
                             "model family?)", field="path")
        groups.setdefault(module, {})[param] = value
    return groups


def _loha(groups: dict[str, dict[str, Any]], path: Path) -> tuple[Any, dict[str, Any]]:
    from peft import LoHaConfig

    ranks, alphas, state = {}, {}, {}
    for module, params in groups.items():
        missing = [p for p in LOHA_PARAMS if p not in params]
        if missing:
            raise InputError(f"'{path}': LoHa layer '{module}' lacks {', '.join(missing)}", field="path")
        r = int(params["hada_w1_b"].shape[0])
        ranks[module] = r
        alphas[module] = float(params["alpha"]) if "alpha" in params else float(r)
        for p in LOHA_PARAMS:
            state[f"{module}.{p}"] = params[p]
    config = LoHaConfig(r=1, alpha=1.0, target_modules=sorted(groups), **_patterns(ranks, alphas))
    return config, state


def _factors(params: dict[str, Any], side: str) -> tuple[tuple[int, int], int | None]:
    """((rows, cols) of the factor `w1`/`w2`, its rank if stored as a low-rank pair else None)."""
    full = params.get(f"lokr_{side}")
    if full is not None:
        return (int(full.shape[0]), int(full.shape[1])), None
    a, b = params.get(f"lokr_{side}_a"), params.get(f"lokr_{side}_b")
    if a is None or b is None:
        raise KeyError(side)
    return (int(a.shape[0]), int(b.shape[1])), int(a.shape[1])


def _lokr_layer(module: str, params: dict[str, Any], layer: Any, path: Path) -> tuple[int, float, int, bool]:
    """(rank, alpha, decompose factor, w1 low-rank) that make peft rebuild this layer's factors as stored."""
    from peft.tuners.lokr.layer import factorization

    try:
        (out_l, in_m), r1 = _factors(params, "w1")
        (out_k, _), r2 = _factors(params, "w2")
    except KeyError as exc:
        raise InputError(f"'{path}': LoKr layer '{module}' lacks its {exc.args[0]} factor",
                         field="path") from exc
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    in_dim = int(getattr(base, "in_features", 0) or base.in_channels)
    out_dim = int(getattr(base, "out_features", 0) or base.out_channels)
    if out_l * out_k != out_dim or in_m < 1 or in_dim % in_m or (r1 and r2 and r1 != r2):
        raise InputError(f"'{path}': LoKr factors of '{module}' do not fit its {out_dim}x{in_dim} weight",
                         field="path")
    shapes = ((out_l, out_k), (in_m, in_dim // in_m))
    factor = next((f for f in (-1, out_l) if (factorization(out_dim, f), factorization(in_dim, f)) == shapes),
                  None)
    if factor is None:
        raise InputError(f"'{path}': LoKr factorisation of '{module}' {shapes} is not one peft can rebuild",
                         field="path")
    rank = r2 or r1 or max(out_k, in_dim // in_m)  # both full: a rank peft reads as "full" (>= max / 2)
    # LyCORIS scales by alpha / r, but by 1 when both factors are full
    alpha = float(rank) if (r1 is None and r2 is None) else float(params.get("alpha", rank))
    return rank, alpha, factor, r1 is not None


def _lokr(groups: dict[str, dict[str, Any]], model: Any, path: Path) -> tuple[Any, dict[str, Any]]:
    from peft import LoKrConfig

    modules = dict(model.named_modules())
    ranks, alphas, state = {}, {}, {}
    decompose_both, factor = False, -1
    for module, params in groups.items():
        rank, alpha, layer_factor, low_rank_w1 = _lokr_layer(module, params, modules[module], path)
        ranks[module], alphas[module] = rank, alpha
        factor = layer_factor if layer_factor != -1 else factor  # one factor per file (peft: per config)
        decompose_both = decompose_both or low_rank_w1
        state.update({f"{module}.{p}": params[p] for p in LOKR_PARAMS if p in params})
    config = LoKrConfig(r=1, alpha=1.0, target_modules=sorted(groups), decompose_both=decompose_both,
                        decompose_factor=factor, **_patterns(ranks, alphas))
    return config, state


def _patterns(ranks: dict[str, int], alphas: dict[str, float]) -> dict[str, Any]:
    """Per-layer rank/alpha for peft, keyed by the exact module path (escaped: peft matches regexes)."""
    return {"rank_pattern": {re.escape(m): r for m, r in ranks.items()},
            "alpha_pattern": {re.escape(m): a for m, a in alphas.items()}}


def _expose_conv_groups(model: Any, groups: dict[str, dict[str, Any]]) -> None:
    """Give each LoHa/LoKr convolution wrapper its base layer's `groups`.

    Why: a peft LoRA added later on the same convolution (a plain LoRA file after this one, on the
    resident model) reads `groups` from the layer it wraps, which peft's LyCORIS wrappers lack
    (AttributeError); everything else it reads through `get_base_layer()`.
    """
    import torch

    modules = dict(model.named_modules())
    for name in groups:
        layer = modules[name]
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        if isinstance(base, torch.nn.Conv2d) and not hasattr(layer, "groups"):
            layer.groups = base.groups


def load_lycoris_adapter(model: Any, state: dict[str, Any], part: str, name: str, path: Path) -> bool:
    """Add the file's LoHa/LoKr layers for `part` to `model` as peft adapter `name`.

    Returns False when the file has no layers for this part (the caller records it as absent).
    """
    from peft import set_peft_model_state_dict

    kind = lycoris_kind(list(state))
    if kind == "mixed":
        raise InputError(f"'{path}' mixes LoHa and LoKr layers; one algorithm per file is supported",
                         field="path")
    groups = _group(state, part, model, path)
    if not groups:
        return False
    config, peft_state = _loha(groups, path) if kind == "loha" else _lokr(groups, model, path)
    model.add_adapter(config, adapter_name=name)
    _expose_conv_groups(model, groups)
    try:
        result = set_peft_model_state_dict(model, peft_state, adapter_name=name)
    except RuntimeError as exc:  # shapes peft built differ from the file's (load_state_dict's message)
        raise InputError(f"'{path}': {kind} weights do not fit the layers peft built: {exc}",
                         field="path") from exc
    mine = [k for k in getattr(result, "missing_keys", []) if f".{name}" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if mine or unexpected:
        raise InputError(f"'{path}': {kind} weights do not fit the model's layers (missing {mine[:3]}, "
                         f"unexpected {unexpected[:3]})", field="path")
    return True
