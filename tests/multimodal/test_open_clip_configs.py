"""Every model config open_clip ships (open_clip/model_configs/*.json, open-clip-torch 3.3.0): those
clip.load accepts map key for key and shape for shape onto transformers' CLIPModel (both built on the
meta device, no weights), and the rest are refused naming a key. A structural check across the real
architectures (ViT-B-32 ... ViT-bigG-14, ViT-e-14) the tiny model of test_open_clip.py cannot cover:
layer counts, head widths, `mlp_ratio` 4.9231 (bigG), image sizes 240/336/378."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph.api import InputError
from tests.multimodal.open_clip_reference import import_open_clip


def _configs() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "model_configs").glob("*.json"))


@pytest.fixture(scope="module")
def open_clip() -> Any:
    return import_open_clip()


@pytest.mark.slow
def test_open_clips_own_configs_map_onto_clipmodel_or_are_refused(open_clip: Any, tmp_path: Path) -> None:
    import transformers
    from nodegraph_multimodal.open_clip_config import clip_config, read_open_clip_config
    from nodegraph_multimodal.open_clip_folders import open_clip_keys, to_clip_state

    accepted, refused = [], []
    for file in _configs():
        model_cfg = json.loads(file.read_text())
        (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
        try:
            spec = read_open_clip_config(tmp_path)
        except InputError as exc:
            assert "CLIPModel cannot express" in str(exc) and " = " in str(exc), file.name
            refused.append(file.stem)
            continue
        with torch.device("meta"):
            theirs = open_clip.model.CLIP(**model_cfg).state_dict()
            ours = transformers.CLIPModel(transformers.CLIPConfig(**clip_config(spec))).state_dict()
        assert sorted(theirs) == sorted(open_clip_keys(spec)), file.name
        converted = to_clip_state(dict(theirs), spec, file)
        shapes = {k: tuple(v.shape) for k, v in converted.items()}
        assert shapes == {k: tuple(v.shape) for k, v in ours.items()}, file.name
        assert model_cfg.get("quick_gelu", False) == (spec.hidden_act == "quick_gelu")
        accepted.append(file.stem)
    assert {"ViT-B-32-quickgelu", "ViT-L-14", "ViT-H-14", "ViT-bigG-14"} <= set(accepted)
    assert {"RN50", "convnext_base", "coca_ViT-B-32", "ViT-B-16-SigLIP", "xlm-roberta-base-ViT-B-32",
            "ViT-M-16-alt", "ViT-L-14-CLIPA"} <= set(refused)
    assert len(accepted) == 31, accepted  # of 144 in open-clip-torch 3.3.0
