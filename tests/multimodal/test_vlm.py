"""Vision-language chat models (image-text-to-text) in caption.generate / vqa.answer: the node's text is
the model's own `generate()` on what its processor makes of the chat turn, decoded after the prompt
(greedy and beams); the question and the prompt reach the model; the folder is checked for its chat
template and image processor before any weights load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from nodegraph import NodeFailed
from tests.multimodal.helpers import broken_vlm_folder, run_graph, vlm_inputs, vlm_reference

QUESTIONS = ("what colour is the circle?", "what shape is on the left?")


class Vlm(NamedTuple):
    folder: Path
    cls: str  # the transformers class caption.load should pick
    image_tokens: int  # image placeholders in the prompt of one 32 px image


@pytest.fixture(params=["llava", "idefics3"])
def vlm(request: pytest.FixtureRequest) -> Vlm:
    """Each tiny chat VLM: LLaVA (16 patch tokens) and Idefics3/SmolVLM (16 patches pixel-shuffled to 4)."""
    folder = request.getfixturevalue(f"{request.param}_dir")
    cls = {"llava": "LlavaForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration"}
    return Vlm(folder, cls[request.param], {"llava": 16, "idefics3": 4}[request.param])


def _caption_nodes(folder: Path, picture: Path, **fields: Any) -> dict[str, Any]:
    return {"img": {"type": "core.load_image", "path": str(picture)},
            "vlm": {"type": "caption.load", "path": str(folder)},
            "cap": {"type": "caption.generate", "model": "@vlm", "image": "@img", **fields}}


def test_caption_load_tells_a_chat_model(vlm: Vlm, tmp_path: Path) -> None:
    result = run_graph({"vlm": {"type": "caption.load", "path": str(vlm.folder)}}, tmp_path)
    handle = result.outputs["vlm"]["out"]
    assert (handle.task, handle.architecture) == ("chat", vlm.cls)


def test_caption_equals_generate_greedy_and_beams(vlm: Vlm, pictures: list[Path], tmp_path: Path) -> None:
    from nodegraph_multimodal.vlm import DEFAULT_PROMPT

    captions = []
    for beams in (1, 3):
        nodes = _caption_nodes(vlm.folder, pictures[0], max_new_tokens=8, num_beams=beams)
        ours = run_graph(nodes, tmp_path / f"out{beams}").outputs["cap"]["out"]
        theirs = vlm_reference(vlm.folder, pictures[0], DEFAULT_PROMPT, vlm.cls, max_new_tokens=8,
                               num_beams=beams)
        assert ours == theirs and theirs
        captions.append(ours)
    assert captions[0] != captions[1]  # a lost num_beams would show


def test_the_prompt_reaches_the_model(llava_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    from nodegraph_multimodal.vlm import DEFAULT_PROMPT

    prompt = "describe the shape in the center."
    ours = run_graph(_caption_nodes(llava_dir, pictures[0], prompt=prompt, max_new_tokens=8),
                     tmp_path).outputs["cap"]["out"]
    assert ours == vlm_reference(llava_dir, pictures[0], prompt, max_new_tokens=8)
    assert ours != vlm_reference(llava_dir, pictures[0], DEFAULT_PROMPT, max_new_tokens=8)


def test_the_question_reaches_the_model(vlm: Vlm, pictures: list[Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on generate() records the ids the node sends: each question's ids are the documented ones
    (image tokens and question words in place), the two differ, and so do the answers."""
    import transformers

    model_cls = getattr(transformers, vlm.cls)
    seen: list[torch.Tensor] = []
    original = model_cls.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["input_ids"].clone())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(model_cls, "generate", spy)
    answers = []
    for i, question in enumerate(QUESTIONS):
        nodes = {"img": {"type": "core.load_image", "path": str(pictures[0])},
                 "vlm": {"type": "caption.load", "path": str(vlm.folder)},
                 "ans": {"type": "vqa.answer", "model": "@vlm", "image": "@img", "question": question,
                         "max_new_tokens": 8}}
        answers.append(run_graph(nodes, tmp_path / f"out{i}").outputs["ans"]["out"])
    monkeypatch.undo()
    assert len(seen) == 2
    assert seen[0].shape != seen[1].shape or not torch.equal(seen[0], seen[1])
    for ids, question, answer in zip(seen, QUESTIONS, answers, strict=True):
        processor, documented = vlm_inputs(vlm.folder, pictures[0], question)
        assert torch.equal(ids, documented["input_ids"])
        assert question.split()[1] in processor.decode(ids[0])  # "colour" / "shape"
        assert (ids == processor.image_token_id).sum() == vlm.image_tokens
        assert answer == vlm_reference(vlm.folder, pictures[0], question, vlm.cls, max_new_tokens=8)
    assert answers[0] != answers[1]


def test_vqa_with_beams_equals_generate(vlm: Vlm, pictures: list[Path], tmp_path: Path) -> None:
    nodes = {"img": {"type": "core.load_image", "path": str(pictures[1])},
             "vlm": {"type": "caption.load", "path": str(vlm.folder)},
             "ans": {"type": "vqa.answer", "model": "@vlm", "image": "@img", "question": QUESTIONS[0],
                     "max_new_tokens": 6, "num_beams": 3}}
    ours = run_graph(nodes, tmp_path).outputs["ans"]["out"]
    theirs = vlm_reference(vlm.folder, pictures[1], QUESTIONS[0], vlm.cls, max_new_tokens=6, num_beams=3)
    assert ours == theirs and theirs


def test_a_template_kept_by_the_tokenizer(llava_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    """Folders that keep the chat template in tokenizer_config.json only (older exports) caption alike."""
    moved = tmp_path / "moved"
    shutil.copytree(llava_dir, moved)
    template = (moved / "chat_template.jinja").read_text()
    (moved / "chat_template.jinja").unlink()
    config = json.loads((moved / "tokenizer_config.json").read_text())
    (moved / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    nodes = _caption_nodes(moved, pictures[0], max_new_tokens=8)
    ours = run_graph(nodes, tmp_path / "out").outputs["cap"]["out"]
    assert ours == run_graph(_caption_nodes(llava_dir, pictures[0], max_new_tokens=8),
                             tmp_path / "out2").outputs["cap"]["out"]


@pytest.mark.parametrize(("drop", "names"), [
    ("chat_template.jinja", "chat_template.jinja"),
    ("image_processor", "preprocessor_config.json"),
])
def test_a_folder_without_template_or_image_processor(llava_dir: Path, pictures: list[Path], tmp_path: Path,
                                                      drop: str, names: str) -> None:
    broken = broken_vlm_folder(llava_dir, tmp_path / "broken", drop)
    with pytest.raises(NodeFailed) as info:
        run_graph(_caption_nodes(broken, pictures[0]), tmp_path / "out")
    assert (info.value.problem.node, info.value.problem.field) == ("vlm", "path")
    assert names in str(info.value)


def test_a_prefix_is_not_an_instruction(llava_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    with pytest.raises(NodeFailed) as info:
        run_graph(_caption_nodes(llava_dir, pictures[0], prefix="a picture of"), tmp_path)
    assert (info.value.problem.node, info.value.problem.field) == ("cap", "prefix")


def test_blip_takes_no_instruction(blip_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    with pytest.raises(NodeFailed) as info:
        run_graph(_caption_nodes(blip_dir, pictures[0], prompt="describe the colours."), tmp_path)
    assert (info.value.problem.node, info.value.problem.field) == ("cap", "prompt")
