"""caption.generate / vqa.answer == the model's own generate() with the same settings (greedy, beams);
a caption links into diffusion.encode_text as its prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import NodeFailed
from tests.multimodal.helpers import pil_images, run_graph


def _reference(folder: Path, cls: str, picture: Path, text: str | None, **settings: Any) -> str:
    import transformers

    model = getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    inputs = processor(images=pil_images([picture])[0], text=text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, **settings)
    return processor.decode(out[0], skip_special_tokens=True).strip()


@pytest.mark.parametrize(("prefix", "beams"), [("", 1), ("", 3), ("a picture of", 1)])
def test_caption_equals_generate(blip_dir: Path, pictures: list[Path], tmp_path: Path, prefix: str,
                                 beams: int) -> None:
    nodes = {"img": {"type": "core.load_image", "path": str(pictures[0])},
             "blip": {"type": "caption.load", "path": str(blip_dir)},
             "cap": {"type": "caption.generate", "model": "@blip", "image": "@img", "prefix": prefix,
                     "max_new_tokens": 8, "num_beams": beams}}
    ours = run_graph(nodes, tmp_path / "out").outputs["cap"]["out"]
    theirs = _reference(blip_dir, "BlipForConditionalGeneration", pictures[0], prefix or None,
                        max_new_tokens=8, num_beams=beams)
    assert ours == theirs and theirs


def test_git_caption_equals_generate(git_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    captions = []
    for beams in (1, 2):
        nodes = {"img": {"type": "core.load_image", "path": str(pictures[0])},
                 "git": {"type": "caption.load", "path": str(git_dir)},
                 "cap": {"type": "caption.generate", "model": "@git", "image": "@img", "max_new_tokens": 6,
                         "num_beams": beams}}
        ours = run_graph(nodes, tmp_path / f"out{beams}").outputs["cap"]["out"]
        theirs = _reference(git_dir, "GitForCausalLM", pictures[0], None, max_new_tokens=6, num_beams=beams)
        assert ours == theirs and theirs
        captions.append(ours)
    assert captions[0] != captions[1]


def test_vqa_equals_generate(vqa_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    question = "what colour is the circle?"
    nodes = {"img": {"type": "core.load_image", "path": str(pictures[1])},
             "blip": {"type": "caption.load", "path": str(vqa_dir)},
             "ans": {"type": "vqa.answer", "model": "@blip", "image": "@img", "question": question,
                     "max_new_tokens": 5, "num_beams": 2}}
    ours = run_graph(nodes, tmp_path / "out").outputs["ans"]["out"]
    theirs = _reference(vqa_dir, "BlipForQuestionAnswering", pictures[1], question, max_new_tokens=5,
                        num_beams=2)
    assert ours == theirs and theirs


def test_caption_is_the_prompt_of_encode_text(blip_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    nodes = {"img": {"type": "core.load_image", "path": str(pictures[2])},
             "blip": {"type": "caption.load", "path": str(blip_dir)},
             "cap": {"type": "caption.generate", "model": "@blip", "image": "@img", "max_new_tokens": 6},
             "model": {"type": "diffusion.load_model", "path": "builtin:tinyworld"},
             "cond": {"type": "diffusion.encode_text", "encoder": "@model.text_encoder", "text": "@cap"}}
    result = run_graph(nodes, tmp_path / "out")
    caption = result.outputs["cap"]["out"]
    direct = run_graph({"model": nodes["model"],
                        "cond": {**nodes["cond"], "text": str(caption)}}, tmp_path / "out2")
    assert result.outputs["cond"]["out"].prompt == caption
    assert torch.equal(result.outputs["cond"]["out"].embeds, direct.outputs["cond"]["out"].embeds)


def test_a_captioner_cannot_answer_questions(blip_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    nodes = {"img": {"type": "core.load_image", "path": str(pictures[0])},
             "blip": {"type": "caption.load", "path": str(blip_dir)},
             "ans": {"type": "vqa.answer", "model": "@blip", "image": "@img", "question": "what?"}}
    with pytest.raises(NodeFailed) as info:
        run_graph(nodes, tmp_path / "out")
    assert (info.value.problem.node, info.value.problem.field) == ("ans", "model")


def test_the_vqa_graph_answers_as_generate_does(tmp_path: Path) -> None:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    from nodegraph import Engine
    from tests.run_helpers import cpu_options

    graphs = Path(__file__).resolve().parents[2] / "graphs"
    result = Engine().run(graphs / "vqa.yaml", {"beams": 2}, cpu_options(tmp_path / "out"))
    picture = graphs / "inputs" / "world_square_64.png"
    theirs = _reference(BUILTIN_DIR / "tinyblip-vqa", "BlipForQuestionAnswering", picture,
                        "what colour is the square?", max_new_tokens=10, num_beams=2)
    assert result.outputs["answer"]["out"] == theirs and theirs
