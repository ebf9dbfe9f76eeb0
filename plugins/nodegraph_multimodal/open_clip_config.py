"""Reading an open_clip folder's `open_clip_config.json` into what a transformers `CLIPModel` needs.

Why a table of keys: open_clip builds many architectures from one config format (timm and ConvNeXt
image towers, Hugging Face text towers, attentional pooling, layer scale, CoCa, SigLIP's logit bias...),
and CLIPModel expresses exactly one of them — OpenAI's ViT image tower and causal text transformer. A
config that asks for anything else must fail on `path` naming the folder and the key *before* weights
load, not load into a model that silently computes something else. So every key is listed with the
values CLIPModel can honour (usually open_clip's own default); an unlisted key, or a listed one set
otherwise, is reported. No torch is imported: clip.load runs it as it names the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph.api import InputError

CONFIG_FILE = "open_clip_config.json"
# OpenAI's BPE (the vocabulary nodegraph ships) has 49408 tokens; another size means another tokenizer
CLIP_VOCAB_SIZE = 49408
# its <|startoftext|> and <|endoftext|>, the last two ids (nodegraph_diffusion.clip_tokenizer.clip_vocab)
BOS_ID, EOS_ID = CLIP_VOCAB_SIZE - 2, CLIP_VOCAB_SIZE - 1
Triple = tuple[float, float, float]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _any(value: Any) -> bool:
    return True


def _off(value: Any) -> bool:
    """False, None or empty: the feature is not used."""
    return not value


def _is(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value in allowed


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _eps_only(value: Any) -> bool:
    """norm_kwargs that only set LayerNorm's eps (CLIPModel's layer_norm_eps); nothing else."""
    return not value or (isinstance(value, dict) and set(value) == {"eps"} and _positive_number(value["eps"]))


def _square_size(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return len(value) == 2 and value[0] == value[1] and _positive_int(value[0])
    return _positive_int(value)


# the custom attention block's switches (open_clip's `block_type: custom`): CLIPModel has none of them
_CUSTOM_BLOCK = {"block_type": _is(None, "default"), "qk_norm": _off, "scaled_cosine_attn": _off,
                 "scale_heads": _off, "scale_attn_inner": _off, "scale_attn": _off, "scale_fc": _off}

VISION_KEYS: dict[str, Callable[[Any], bool]] = {
    "layers": _positive_int,  # a list of four is ModifiedResNet
    "width": _positive_int, "head_width": _positive_int, "mlp_ratio": _positive_number,
    "patch_size": _positive_int, "image_size": _square_size,
    "ls_init_value": _off, "patch_dropout": _any,  # patch dropout is training-only
    "attentional_pool": _off, "attn_pooler_queries": _any, "attn_pooler_heads": _any,
    "no_ln_pre": _off, "pos_embed_type": _is("learnable"), "final_ln_after_pool": _off,
    "pool_type": _is("tok"), "output_tokens": _off, "act_kwargs": _off, "norm_kwargs": _eps_only,
    **_CUSTOM_BLOCK,
    "timm_model_name": _off,  # the timm_* settings below only matter with a timm tower
    "timm_model_pretrained": _any, "timm_pool": _any, "timm_proj": _any, "timm_proj_bias": _any,
    "timm_drop": _any, "timm_drop_path": _any,
}
TEXT_KEYS: dict[str, Callable[[Any], bool]] = {
    "context_length": _positive_int, "vocab_size": _is(CLIP_VOCAB_SIZE),
    "width": _positive_int, "heads": _positive_int, "layers": _positive_int, "mlp_ratio": _positive_number,
    "ls_init_value": _off, "embed_cls": _off, "pad_id": _any, "eos_id": _any,  # eos_id: 'eos' pooling only
    "no_causal_mask": _off, "final_ln_after_pool": _off, "pool_type": _is("argmax"), "proj_bias": _off,
    "proj_type": _is("linear"), "output_tokens": _off, "act_kwargs": _off, "norm_kwargs": _eps_only,
    **_CUSTOM_BLOCK,
    "hf_model_name": _off, "hf_tokenizer_name": _off, "tokenizer_mode": _off, "tokenizer_kwargs": _off,
    "hf_model_pretrained": _any, "hf_proj_type": _any, "hf_pooler_type": _any,  # only with hf_model_name
}
MODEL_KEYS: dict[str, Callable[[Any], bool]] = {
    "embed_dim": _positive_int, "vision_cfg": _any, "text_cfg": _any, "quick_gelu": _is(True, False),
    "custom_text": _off, "init_logit_scale": _any, "init_logit_bias": _is(None),
    "nonscalar_logit_scale": _any, "output_dict": _any,
}
# open_clip's own defaults (CLIPVisionCfg / CLIPTextCfg), for the keys a config may leave out
VISION_DEFAULTS = {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16,
                   "image_size": 224}
TEXT_DEFAULTS = {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, "width": 512, "heads": 8, "layers": 12,
                 "mlp_ratio": 4.0}
RESIZE_MODES = ("shortest", "squash")  # 'longest' pads, which CLIPImageProcessor does not


@dataclass(frozen=True)
class Tower:
    """One transformer tower in CLIPModel's terms."""

    width: int
    layers: int
    heads: int
    intermediate: int  # open_clip's int(width * mlp_ratio)
    layer_norm_eps: float


@dataclass(frozen=True)
class OpenClipSpec:
    """What an open_clip folder's config says, checked to be a model CLIPModel computes exactly."""

    embed_dim: int
    quick_gelu: bool
    vision: Tower
    text: Tower
    patch_size: int
    image_size: int
    context_length: int
    mean: Triple
    std: Triple
    interpolation: str  # "bicubic" | "bilinear"
    resize_mode: str  # "shortest" (resize + centre crop) | "squash"

    @property
    def hidden_act(self) -> str:
        """QuickGELU for OpenAI-trained weights (`quick_gelu: true`), else exact GELU (torch's nn.GELU)."""
        return "quick_gelu" if self.quick_gelu else "gelu"


def _problems(section: str, cfg: dict[str, Any], keys: dict[str, Callable[[Any], bool]]) -> list[str]:
    prefix = f"{section}." if section else ""
    return [f"{prefix}{key} = {json.dumps(value)}" for key, value in cfg.items()
            if key not in keys or not keys[key](value)]


def _triple(value: Any, default: Triple, key: str, folder: Path) -> Triple:
    if value is None:
        return default
    values = [value] * 3 if isinstance(value, int | float) else value
    if not isinstance(values, list | tuple) or len(values) != 3 or not all(
            isinstance(v, int | float) for v in values):
        raise InputError(f"'{folder / CONFIG_FILE}': preprocess_cfg.{key} must be a number or three numbers, "
                         f"not {json.dumps(value)}", field="path")
    return (float(values[0]), float(values[1]), float(values[2]))


def _tower(cfg: dict[str, Any], heads: int) -> Tower:
    width = int(cfg["width"])
    eps = float((cfg.get("norm_kwargs") or {}).get("eps", 1e-5))  # nn.LayerNorm's default
    return Tower(width, int(cfg["layers"]), heads, int(width * float(cfg["mlp_ratio"])), eps)


def read_open_clip_config(folder: Path) -> OpenClipSpec:
    """The folder's open_clip_config.json as an `OpenClipSpec`; InputError (field `path`) naming the folder
    and every key CLIPModel cannot express, before anything else is read."""
    file = folder / CONFIG_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read '{file}': {exc}", field="path") from exc
    model = data.get("model_cfg", data) if isinstance(data, dict) else None
    towers = ("vision_cfg", "text_cfg")
    if not isinstance(model, dict) or not all(isinstance(model.get(k), dict) for k in towers) \
            or "embed_dim" not in model:
        raise InputError(f"'{file}' is not an open_clip config (it needs model_cfg with embed_dim, "
                         "vision_cfg and text_cfg)", field="path")
    vision = {**VISION_DEFAULTS, **model["vision_cfg"]}
    text = {**TEXT_DEFAULTS, **model["text_cfg"]}
    problems = (_problems("model_cfg", model, MODEL_KEYS) + _problems("vision_cfg", vision, VISION_KEYS)
                + _problems("text_cfg", text, TEXT_KEYS))
    preprocess = data.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        preprocess = {}
    resize_mode = preprocess.get("resize_mode") or "shortest"
    if resize_mode not in RESIZE_MODES:
        problems.append(f"preprocess_cfg.resize_mode = {json.dumps(resize_mode)}")
    if preprocess.get("mode", "RGB") != "RGB":
        problems.append(f"preprocess_cfg.mode = {json.dumps(preprocess.get('mode'))}")
    if problems:
        raise InputError(f"'{folder}' is an open_clip model that transformers' CLIPModel cannot express; "
                         f"unsupported in {CONFIG_FILE}: {'; '.join(problems)} (supported: OpenAI-layout ViT "
                         "image and text towers, as laion/CLIP-ViT-H-14 and ViT-bigG-14 have)", field="path")
    size = vision["image_size"]
    side = int(size[0] if isinstance(size, list | tuple) else size)
    return OpenClipSpec(
        embed_dim=int(model["embed_dim"]), quick_gelu=bool(model.get("quick_gelu", False)),
        vision=_tower(vision, int(vision["width"]) // int(vision["head_width"])),
        text=_tower(text, int(text["heads"])),
        patch_size=int(vision["patch_size"]), image_size=side,
        context_length=int(text["context_length"]),
        mean=_triple(preprocess.get("mean"), OPENAI_MEAN, "mean", folder),
        std=_triple(preprocess.get("std"), OPENAI_STD, "std", folder),
        # open_clip's eval transform treats 'random' as bicubic
        interpolation="bilinear" if preprocess.get("interpolation") == "bilinear" else "bicubic",
        resize_mode=resize_mode)


def clip_config(spec: OpenClipSpec) -> dict[str, Any]:
    """`transformers.CLIPConfig` keyword arguments for the spec."""

    def tower(t: Tower) -> dict[str, Any]:
        return {"hidden_size": t.width, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
                "intermediate_size": t.intermediate, "layer_norm_eps": t.layer_norm_eps,
                "hidden_act": spec.hidden_act, "projection_dim": spec.embed_dim}

    # CLIPTextTransformer pools at the first EOS; EOS is the vocabulary's largest id, so that is open_clip's
    # argmax pooling. The pad is EOS too (open_clip_folders.open_clip_processor says why)
    text = {**tower(spec.text), "vocab_size": CLIP_VOCAB_SIZE, "max_position_embeddings": spec.context_length,
            "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": EOS_ID}
    vision = {**tower(spec.vision), "image_size": spec.image_size, "patch_size": spec.patch_size}
    return {"text_config": text, "vision_config": vision, "projection_dim": spec.embed_dim}


def image_processor_settings(spec: OpenClipSpec) -> dict[str, Any]:
    """`CLIPImageProcessorPil` keyword arguments giving open_clip's eval transform for the spec."""
    from transformers.image_utils import PILImageResampling

    resample = PILImageResampling.BILINEAR if spec.interpolation == "bilinear" else PILImageResampling.BICUBIC
    side = spec.image_size
    common = {"image_mean": list(spec.mean), "image_std": list(spec.std), "resample": resample}
    if spec.resize_mode == "squash":
        return {**common, "size": {"height": side, "width": side}, "do_center_crop": False}
    return {**common, "size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side},
            "do_center_crop": True}
