"""open_clip folders in clip.load: clip.score equals open_clip's own model (built with open_clip's code)
on the same pixels and token ids, with QuickGELU and with GELU; the tokenizer gives open_clip's
SimpleTokenizer ids; the image processor uses the config's size, mean and std; configs CLIPModel cannot
express are refused on `path` naming the key, before weights are read; the conversion runs once per run
and writes nothing into the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodegraph import NodeFailed
from tests.multimodal.helpers import batch_nodes, pil_images, run_graph
from tests.multimodal.open_clip_reference import (
    build_open_clip,
    import_open_clip,
    open_clip_logits,
    save_open_clip,
    tiny_config,
)

TEXTS = ["a big red circle in the center, blue background", "A SMALL Green square!! on the left...",
         "a person in a yellow shirt (and pants), don't"]
PROMPTS = [*TEXTS, "", "café crème, naïve", "1girl, 1024x768, 3.14, 50% $20 #tag @user", "a   b\tc",
           "antidisestablishmentarianism", "red " * 40]  # the last one is over 77 tokens


@pytest.fixture(scope="module")
def open_clip() -> Any:
    return import_open_clip()


@pytest.fixture(scope="module", params=[True, False], ids=["quick_gelu", "gelu"])
def built(request: pytest.FixtureRequest, open_clip: Any, tmp_path_factory: pytest.TempPathFactory,
          ) -> tuple[Any, Path]:
    """(open_clip model, its saved folder), QuickGELU (OpenAI-trained) or GELU; the GELU one also sets
    LayerNorm's eps through `norm_kwargs` (0.1, so that ignoring it would show)."""
    config = tiny_config(quick_gelu=request.param)
    if not request.param:
        for tower in ("vision_cfg", "text_cfg"):
            config["model_cfg"][tower]["norm_kwargs"] = {"eps": 0.1}
    model = build_open_clip(open_clip, config, seed=11)
    return model, save_open_clip(model, config, tmp_path_factory.mktemp("open_clip") / "tiny")


def _processor(folder: Path) -> Any:
    from nodegraph_multimodal.open_clip_config import read_open_clip_config
    from nodegraph_multimodal.open_clip_folders import open_clip_processor

    return open_clip_processor(read_open_clip_config(folder))


def _score_nodes(folder: Path, pictures: list[Path], texts: list[str] = TEXTS) -> dict:
    nodes = batch_nodes(pictures)
    nodes["clip"] = {"type": "clip.load", "path": str(folder)}
    nodes["score"] = {"type": "clip.score", "clip": "@clip", "image": "@batch", "texts": texts}
    return nodes


def test_score_equals_open_clip(open_clip: Any, built: tuple[Any, Path], pictures: list[Path],
                                tmp_path: Path) -> None:
    """Model against model: open_clip gets the processor's pixels and its own tokenizer's ids."""
    model, folder = built
    result = run_graph(_score_nodes(folder, pictures), tmp_path / "out")
    ours = result.outputs["score"]["out"].values
    pixels = _processor(folder)(images=pil_images(pictures), return_tensors="pt")["pixel_values"]
    tokens = open_clip.tokenizer.tokenize(TEXTS)  # padded with 0 to 77, as open_clip feeds its model
    theirs = open_clip_logits(model, pixels, tokens)
    assert ours.shape == theirs.shape == (3, 3)
    # measured 2.4e-6 (quick_gelu) / 3.7e-6 (gelu), at most 4.3e-6 over seeds 11-13: not 0, because open_clip
    # attends with nn.MultiheadAttention and CLIPModel with q/k/v Linears + SDPA (same maths, other kernels)
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert float(theirs.std()) > 0.5
    # the activation is honoured: the same weights with the other one score differently
    cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    other = open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                                 quick_gelu=not cfg["quick_gelu"]).eval()
    other.load_state_dict(model.state_dict())
    assert (ours - open_clip_logits(other, pixels, tokens)).abs().max().item() > 1e-3


def test_score_image_equals_open_clip_image_cosine(built: tuple[Any, Path], pictures: list[Path],
                                                   tmp_path: Path) -> None:
    import torch.nn.functional as F  # noqa: N812

    model, folder = built
    nodes = batch_nodes(pictures)
    nodes["clip"] = {"type": "clip.load", "path": str(folder)}
    nodes["ref"] = {"type": "core.load_image", "path": str(pictures[2])}
    nodes["score"] = {"type": "clip.score_image", "clip": "@clip", "image": "@batch", "reference": "@ref"}
    ours = run_graph(nodes, tmp_path / "out").outputs["score"]["out"].values
    pixels = _processor(folder)(images=pil_images(pictures), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = F.normalize(model.encode_image(pixels), dim=-1)
        theirs = model.logit_scale.exp() * embeds @ embeds[2:3].T
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_long_prompts_are_cut_as_open_clip_cuts_them(open_clip: Any, built: tuple[Any, Path],
                                                     pictures: list[Path], tmp_path: Path) -> None:
    """Past the context length open_clip keeps 76 tokens and puts EOS last; so does clip.score."""
    model, folder = built
    texts = [PROMPTS[-1], "red"]
    ours = run_graph(_score_nodes(folder, pictures, texts), tmp_path / "out").outputs["score"]["out"].values
    pixels = _processor(folder)(images=pil_images(pictures), return_tensors="pt")["pixel_values"]
    theirs = open_clip_logits(model, pixels, open_clip.tokenizer.tokenize(texts))
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize("context_length", [77, 24])
def test_tokenizer_gives_simple_tokenizer_ids(open_clip: Any, tmp_path: Path, context_length: int) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(tiny_config(True, context_length)))
    tokenizer = _processor(folder).tokenizer
    simple = open_clip.tokenizer.SimpleTokenizer()  # its bundled bpe_simple_vocab_16e6.txt.gz
    assert tokenizer.model_max_length == context_length
    for text in PROMPTS:
        assert tokenizer(text).input_ids == [49406, *simple.encode(text), 49407], text
        window = open_clip.tokenizer.tokenize([text], context_length=context_length)[0].tolist()
        ours = tokenizer(text, truncation=True).input_ids
        assert ours == window[:len(ours)] and set(window[len(ours):]) <= {0}, text


def test_image_processor_is_resize_crop_normalise_with_the_configs_values(built: tuple[Any, Path],
                                                                          pictures: list[Path]) -> None:
    """open_clip's eval transform on a PIL image, as torchvision computes it there (Resize: PIL bicubic of
    the short side to image_size; CenterCrop; ToTensor: /255 in float32; Normalize with the config's mean
    and std) — written out with PIL and torch, since torchvision is not installable beside this torch."""
    _, folder = built
    processor = _processor(folder).image_processor
    config = json.loads((folder / "open_clip_config.json").read_text())
    mean = torch.tensor(config["preprocess_cfg"]["mean"])[:, None, None]
    std = torch.tensor(config["preprocess_cfg"]["std"])[:, None, None]
    for image in pil_images(pictures):  # 40 x 48: resized to 32 x 38, crop offset 3 (round and floor agree)
        resized = np.asarray(image.resize((32, 38), PILImage.Resampling.BICUBIC))
        expected = (torch.from_numpy(resized[3:35].copy()).permute(2, 0, 1).float().div(255) - mean) / std
        got = processor(images=[image], return_tensors="pt")["pixel_values"][0]
        assert got.shape == (3, 32, 32)
        assert (got - expected).abs().max().item() == 0.0


@pytest.mark.parametrize(("section", "key", "value"), [
    ("vision_cfg", "attentional_pool", True),
    ("vision_cfg", "timm_model_name", "convnext_base"),
    ("vision_cfg", "layers", [3, 4, 6, 3]),  # ModifiedResNet
    ("vision_cfg", "ls_init_value", 1e-5),
    ("vision_cfg", "no_ln_pre", True),
    ("vision_cfg", "final_ln_after_pool", True),
    ("vision_cfg", "pool_type", "avg"),
    ("vision_cfg", "image_size", [32, 48]),
    ("text_cfg", "hf_model_name", "xlm-roberta-base"),
    ("text_cfg", "proj_bias", True),
    ("text_cfg", "embed_cls", True),
    ("text_cfg", "output_tokens", True),
    ("text_cfg", "vocab_size", 32000),
    ("model_cfg", "multimodal_cfg", {"width": 32}),  # CoCa
    ("model_cfg", "init_logit_bias", -10),  # SigLIP
    ("model_cfg", "custom_text", True),
    ("preprocess_cfg", "resize_mode", "longest"),
])
def test_configs_clipmodel_cannot_express_are_refused_before_weights_load(
        tmp_path: Path, section: str, key: str, value: Any) -> None:
    config = tiny_config(quick_gelu=False)
    target = config if section in ("model_cfg", "preprocess_cfg") else config["model_cfg"]
    (target[section] if section in target else target)[key] = value
    folder = tmp_path / "unsupported"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_model.safetensors").write_bytes(b"not weights: reading them would fail differently")
    with pytest.raises(NodeFailed) as info:
        run_graph({"clip": {"type": "clip.load", "path": str(folder)}}, tmp_path / "out")
    problem = info.value.problem
    assert (problem.node, problem.field) == ("clip", "path")
    assert str(folder) in problem.message and f"{section}.{key} = " in problem.message
    assert "CLIPModel cannot express" in problem.message


def test_weights_that_do_not_match_the_config_name_the_keys(built: tuple[Any, Path], pictures: list[Path],
                                                            tmp_path: Path) -> None:
    _, folder = built
    deeper = tmp_path / "deeper"
    deeper.mkdir()
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["layers"] = 3
    (deeper / "open_clip_config.json").write_text(json.dumps(config))
    weights = "open_clip_model.safetensors"
    (deeper / weights).write_bytes((folder / weights).read_bytes())
    with pytest.raises(NodeFailed) as info:
        run_graph(_score_nodes(deeper, pictures), tmp_path / "out")
    problem = info.value.problem
    assert (problem.node, problem.field) == ("score", "clip")
    assert "missing: transformer.resblocks.2.attn.in_proj_weight" in problem.message


def test_pickled_weights_load_only_when_allowed(open_clip: Any, built: tuple[Any, Path],
                                                pictures: list[Path], tmp_path: Path) -> None:
    model, folder = built
    config = json.loads((folder / "open_clip_config.json").read_text())
    pickled = save_open_clip(model, config, tmp_path / "pickled", pickle=True)
    with pytest.raises(NodeFailed) as info:
        run_graph(_score_nodes(pickled, pictures), tmp_path / "out")
    assert (info.value.problem.node, info.value.problem.field) == ("clip", "path")
    assert "open_clip_pytorch_model.bin" in info.value.problem.message
    allowed = run_graph(_score_nodes(pickled, pictures), tmp_path / "out2", allow_pickle=True)
    ours = allowed.outputs["score"]["out"]
    same = run_graph(_score_nodes(folder, pictures), tmp_path / "out3").outputs["score"]["out"]
    assert torch.equal(ours.values, same.values)


def test_converted_once_per_run_and_nothing_written_to_the_folder(
        built: tuple[Any, Path], pictures: list[Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nodegraph_multimodal import open_clip_folders

    _, folder = built
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    calls: list[Path] = []
    real = open_clip_folders.load_open_clip_model

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(open_clip_folders, "load_open_clip_model", counting)
    nodes = _score_nodes(folder, pictures)
    nodes["score2"] = {"type": "clip.score", "clip": "@clip", "image": "@batch", "texts": ["another text"]}
    nodes["ref"] = {"type": "clip.score_image", "clip": "@clip", "image": "@batch", "reference": "@batch"}
    run_graph(nodes, tmp_path / "out")
    assert len(calls) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


def test_a_folder_of_neither_layout(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(NodeFailed) as info:
        run_graph({"clip": {"type": "clip.load", "path": str(folder)}}, tmp_path / "out")
    message = info.value.problem.message
    assert "config.json" in message and "open_clip_config.json" in message


def test_open_clip_folder_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(tiny_config(True)))
    with pytest.raises(NodeFailed) as info:
        run_graph({"clip": {"type": "clip.load", "path": str(folder)}}, tmp_path / "out")
    assert (info.value.problem.field, "no weights" in info.value.problem.message) == ("path", True)


@pytest.mark.parametrize(("preprocess", "expected"), [
    ({"resize_mode": "squash", "interpolation": "bilinear"},
     {"size": {"height": 32, "width": 32}, "do_center_crop": False, "resample": 2}),
    ({"interpolation": "random"}, {"size": {"shortest_edge": 32}, "do_center_crop": True, "resample": 3}),
])
def test_image_processor_settings_follow_preprocess_cfg(tmp_path: Path, preprocess: dict,
                                                        expected: dict) -> None:
    from nodegraph_multimodal.open_clip_config import image_processor_settings, read_open_clip_config

    config = tiny_config(True)
    config["preprocess_cfg"] = preprocess  # no mean/std: OpenAI's, as open_clip defaults them
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    settings = image_processor_settings(read_open_clip_config(tmp_path))
    assert {k: settings[k] for k in expected} == expected
    assert settings["image_mean"] == [0.48145466, 0.4578275, 0.40821073]
