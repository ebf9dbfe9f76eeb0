"""Bad inputs through the CLI: a question with no image, a CLIP folder without its processor, an open_clip
config CLIPModel cannot express, pickled weights (an embedding, an open_clip .bin) without --allow-pickle
-> a file/node/field message, exit 2, no traceback, no outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from nodegraph.cli.app import app
from nodegraph.nodes.registry import Registry, build_registry
from tests.multimodal.open_clip_reference import tiny_config


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def run_bad(registry: Registry, tmp_path: Path, nodes: dict, *args: str) -> str:
    graph = tmp_path / "bad.yaml"
    graph.write_text(yaml.safe_dump({"version": 1, "nodes": nodes}, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(graph), "--out", str(tmp_path / "out"), "--no-cache", "-q",
                                      *args], obj={"registry": registry})
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    text = " ".join(result.output.split())
    assert "bad.yaml" in text
    return text


def test_a_question_with_no_image(registry: Registry, tmp_path: Path) -> None:
    text = run_bad(registry, tmp_path, {
        "vqa": {"type": "caption.load", "path": "builtin:tinyblip-vqa"},
        "ans": {"type": "vqa.answer", "model": "@vqa", "question": "what colour is the circle?"}})
    assert "node 'ans', field 'image'" in text


def test_an_empty_question(registry: Registry, tmp_path: Path) -> None:
    picture = Path(__file__).resolve().parents[2] / "graphs" / "inputs" / "scene_64.png"
    text = run_bad(registry, tmp_path, {
        "img": {"type": "core.load_image", "path": str(picture)},
        "vqa": {"type": "caption.load", "path": "builtin:tinyblip-vqa"},
        "ans": {"type": "vqa.answer", "model": "@vqa", "image": "@img", "question": "  "}})
    assert "node 'ans', field 'question'" in text and "empty" in text


def test_a_clip_folder_without_processor(registry: Registry, tmp_path: Path, clip_dir: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((clip_dir / name).read_bytes())
    text = run_bad(registry, tmp_path, {"clip": {"type": "clip.load", "path": str(bare)}})
    assert "node 'clip', field 'path'" in text and "has no processor" in text


def test_an_open_clip_config_clipmodel_cannot_express(registry: Registry, tmp_path: Path) -> None:
    config = tiny_config(quick_gelu=True)
    config["model_cfg"]["vision_cfg"]["attentional_pool"] = True
    folder = tmp_path / "attn-pool-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_model.safetensors").write_bytes(b"never read")
    text = run_bad(registry, tmp_path, {"clip": {"type": "clip.load", "path": str(folder)}})
    assert "node 'clip', field 'path'" in text and str(folder) in text
    assert "vision_cfg.attentional_pool = true" in text


def test_an_open_clip_bin_without_allow_pickle(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "bin-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(tiny_config(quick_gelu=True)))
    torch.save({"logit_scale": torch.zeros(())}, folder / "open_clip_pytorch_model.bin")
    text = run_bad(registry, tmp_path, {"clip": {"type": "clip.load", "path": str(folder)}})
    assert "node 'clip', field 'path'" in text and "open_clip_pytorch_model.bin" in text
    assert "--allow-pickle" in text


def test_a_pickled_embedding_without_allow_pickle(registry: Registry, tmp_path: Path) -> None:
    file = tmp_path / "oldstyle.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}, "name": "oldstyle"}, file)
    nodes = {"model": {"type": "diffusion.load_model", "path": "builtin:tinyworld"},
             "emb": {"type": "diffusion.load_embedding", "encoder": "@model.text_encoder", "path": str(file)},
             "cond": {"type": "diffusion.encode_text", "encoder": "@emb", "text": "oldstyle"}}
    text = run_bad(registry, tmp_path, nodes)
    assert "node 'emb', field 'path'" in text and "--allow-pickle" in text


def test_an_sdxl_embedding_on_sd1(registry: Registry, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    file = tmp_path / "xlstyle.safetensors"
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, file)
    nodes = {"model": {"type": "diffusion.load_model", "path": "builtin:tinyworld"},
             "emb": {"type": "diffusion.load_embedding", "encoder": "@model.text_encoder", "path": str(file)},
             "cond": {"type": "diffusion.encode_text", "encoder": "@emb", "text": "xlstyle"}}
    text = run_bad(registry, tmp_path, nodes)
    assert "node 'emb', field 'path'" in text and "SDXL embedding" in text and "(1, 1280)" in text
