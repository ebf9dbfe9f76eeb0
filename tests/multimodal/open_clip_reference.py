"""open_clip itself as the reference of the open_clip-folder tests: its package imported with a stand-in
`torchvision`, and tiny open_clip models built with its own `CLIP` class, saved as a hub folder is.

open-clip-torch is installed with --no-deps (its torchvision cannot sit beside this torch). Only
open_clip's transform.py and utils.py touch torchvision at import time, for names the model code never
calls (image transforms, FrozenBatchNorm2d); stand-ins with those names let the package import, and
they and open_clip's modules leave `sys.modules` straight after, so no other test sees them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

TRANSFORM_NAMES = ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop",
                   "ColorJitter", "Grayscale")


def _stand_in_torchvision() -> dict[str, types.ModuleType]:
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
             "torchvision.ops.misc")
    modules = {name: types.ModuleType(name) for name in names}
    transforms = modules["torchvision.transforms"]
    for name in TRANSFORM_NAMES:
        setattr(transforms, name, type(name, (), {}))
    transforms.InterpolationMode = type("InterpolationMode", (), {  # type: ignore[attr-defined]
        "BICUBIC": "bicubic", "BILINEAR": "bilinear", "NEAREST": "nearest"})
    modules["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})  # type: ignore[attr-defined]
    for parent, child in (("torchvision", "transforms"), ("torchvision.transforms", "functional"),
                          ("torchvision", "ops"), ("torchvision.ops", "misc")):
        setattr(modules[parent], child, modules[f"{parent}.{child}"])
    return modules


def import_open_clip() -> Any:
    """The open_clip package (skips the test when it is not installed); sys.modules restored after."""
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open-clip-torch is not installed (pip install --no-deps open-clip-torch ftfy)")
    pytest.importorskip("ftfy")
    import transformers  # noqa: F401 - first, so it records that torchvision is absent before the stand-in

    stand_ins = _stand_in_torchvision()
    sys.modules.update(stand_ins)
    try:
        import open_clip
        import open_clip.model
        import open_clip.tokenizer

        return open_clip
    finally:  # neither the stand-ins nor an open_clip bound to them stay importable
        for name in [n for n in sys.modules if n in stand_ins or n.split(".")[0] == "open_clip"]:
            del sys.modules[name]


def tiny_config(quick_gelu: bool, context_length: int = 77, **vision: Any) -> dict[str, Any]:
    """A hub-style open_clip_config.json: a tiny ViT CLIP (width 32, 2 layers, 32 px, patch 8) with
    OpenAI's vocabulary, and a preprocess_cfg whose mean/std are not the defaults (so using them shows)."""
    model = {"embed_dim": 16, "quick_gelu": quick_gelu,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8,
                            **vision},
             "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 32, "heads": 4,
                          "layers": 2}}
    return {"model_cfg": model, "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}


def build_open_clip(open_clip: Any, config: dict[str, Any], seed: int) -> Any:
    """open_clip's own `CLIP` for the config, every parameter moved off its init.

    open_clip initialises LayerNorms to (1, 0) and the attention biases to 0: a wrong mapping of any of
    them would leave the outputs unchanged, so all parameters get noise."""
    cfg = config["model_cfg"]
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                                 quick_gelu=cfg["quick_gelu"]).eval()
    noise = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=noise) * 0.1)
    return model


def save_open_clip(model: Any, config: dict[str, Any], folder: Path, pickle: bool = False) -> Path:
    """The folder open_clip's `save_for_hf` writes: open_clip_config.json and the weights
    (open_clip_model.safetensors, or open_clip_pytorch_model.bin with `pickle`)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if pickle:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    else:
        save_file(state, folder / "open_clip_model.safetensors")
    return folder


def open_clip_logits(model: Any, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """What the issue defines a score as: logit_scale.exp() * normalised image @ normalised text features."""
    import torch.nn.functional as F  # noqa: N812

    with torch.no_grad():
        image = F.normalize(model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        return model.logit_scale.exp() * image @ text.T
