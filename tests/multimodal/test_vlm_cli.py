"""A vision-language chat model through the CLI: `graphs/vqa.yaml --set model=FOLDER` prints the answer
generate() gives; in `graphs/caption_regenerate.yaml` its caption is the prompt of the new image (the PNG
equals the one drawn with that caption typed in as the prompt); a VLM folder without its chat template
or image processor is exit 2 naming the node, field and file, no traceback, no outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nodegraph.cli.app import app
from nodegraph.nodes.registry import Registry, build_registry
from tests.multimodal.helpers import broken_vlm_folder, vlm_reference

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PICTURE = GRAPHS / "inputs" / "scene_64.png"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def cli(registry: Registry, graph: Path, out: Path, *sets: str) -> tuple[int, str]:
    args = ["run", str(graph), "--out", str(out), "--no-cache", "--device", "cpu", "--dtype", "float32"]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(app, args, obj={"registry": registry})
    return result.exit_code, " ".join(result.output.split())


def test_the_vqa_graph_with_a_vlm(registry: Registry, llava_dir: Path, tmp_path: Path) -> None:
    code, text = cli(registry, GRAPHS / "vqa.yaml", tmp_path / "out", f"model={llava_dir}", "beams=2")
    assert code == 0, text
    theirs = vlm_reference(llava_dir, GRAPHS / "inputs" / "world_square_64.png", "what colour is the square?",
                           max_new_tokens=10, num_beams=2)  # the graph's default picture and question
    assert f"answer.out = {theirs!r}" in text and theirs


@pytest.mark.slow
def test_a_vlm_caption_is_the_prompt_of_the_new_image(registry: Registry, llava_dir: Path,
                                                      tmp_path: Path) -> None:
    import numpy as np
    from nodegraph_multimodal.vlm import DEFAULT_PROMPT
    from PIL import Image as PILImage

    graph = GRAPHS / "caption_regenerate.yaml"
    caption = vlm_reference(llava_dir, PICTURE, DEFAULT_PROMPT, max_new_tokens=20)
    sets = (f"captioner={llava_dir}", f"vqa={llava_dir}", f"image={PICTURE}", "steps=3")
    linked = cli(registry, graph, tmp_path / "linked", *sets)
    typed = cli(registry, graph, tmp_path / "typed", *sets, f"positive.text={caption}")
    other = cli(registry, graph, tmp_path / "other", *sets, "positive.text=a big red circle in the center")
    assert linked[0] == typed[0] == other[0] == 0, (linked, typed, other)

    def pixels(run: str) -> torch.Tensor:
        with PILImage.open(tmp_path / run / "caption_regenerate.png") as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy())

    assert caption and torch.equal(pixels("linked"), pixels("typed"))
    assert not torch.equal(pixels("linked"), pixels("other"))  # the prompt shows in the pixels


@pytest.mark.parametrize(("drop", "file"), [("chat_template.jinja", "chat_template.jinja"),
                                            ("image_processor", "preprocessor_config.json")])
def test_a_vlm_folder_missing_a_part(registry: Registry, llava_dir: Path, tmp_path: Path, drop: str,
                                     file: str) -> None:
    broken = broken_vlm_folder(llava_dir, tmp_path / "broken", drop)
    code, text = cli(registry, GRAPHS / "vqa.yaml", tmp_path / "out", f"model={broken}")
    assert code == 2, text
    assert "Traceback" not in text and not (tmp_path / "out").exists()
    assert "vqa.yaml" in text and "node 'vqa', field 'path'" in text and file in text


def test_a_processor_that_needs_a_missing_library(registry: Registry, llava_dir: Path,
                                                  tmp_path: Path) -> None:
    """A Qwen2-VL folder where torchvision is not installed: its processor builds a video processor that
    needs it, so the run stops at the model with transformers' words, before any weights load."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: Qwen2-VL's processor loads")
    folder = tmp_path / "qwen2-vl"
    shutil.copytree(llava_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="qwen2_vl", architectures=["Qwen2VLForConditionalGeneration"])
    (folder / "config.json").write_text(json.dumps(config))
    merge = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    (folder / "processor_config.json").write_text(json.dumps({
        "processor_class": "Qwen2VLProcessor",
        "image_processor": {"image_processor_type": "Qwen2VLImageProcessor", **merge},
        "video_processor": {"video_processor_type": "Qwen2VLVideoProcessor", **merge}}))
    (folder / "model.safetensors").unlink()  # the processor fails first: no weights are read
    code, text = cli(registry, GRAPHS / "vqa.yaml", tmp_path / "out", f"model={folder}")
    assert code == 2, text
    assert "Traceback" not in text and not (tmp_path / "out").exists()
    assert "node 'answer', field 'model'" in text and "torchvision" in text.lower()
