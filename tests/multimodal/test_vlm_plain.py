"""Vision-language models prompted without a chat template (PaliGemma and Florence-2, as their folders
ship): the node's text equals `generate()` + decode on `processor(text=..., images=...)`, the way their
docs prompt them (PaliGemma "<image>" + task; Florence-2 task tokens, an encoder-decoder whose output is
the reply alone); caption.generate's default prompt becomes the model's task prompt ("caption en",
"<MORE_DETAILED_CAPTION>"); the question reaches the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from tests.multimodal.helpers import plain_reference, run_graph


class Prompted(NamedTuple):
    folder: Path
    cls: str
    format: str  # how the docs write the prompt
    caption: str  # the task prompt the default caption becomes


@pytest.fixture(params=["paligemma", "florence2"])
def prompted(request: pytest.FixtureRequest) -> Prompted:
    folder = request.getfixturevalue(f"{request.param}_dir")
    known = {"paligemma": ("PaliGemmaForConditionalGeneration", "<image>{}", "caption en"),
             "florence2": ("Florence2ForConditionalGeneration", "{}", "<MORE_DETAILED_CAPTION>")}
    return Prompted(folder, *known[request.param])


def _nodes(folder: Path, picture: Path, node: dict[str, Any]) -> dict[str, Any]:
    return {"img": {"type": "core.load_image", "path": str(picture)},
            "vlm": {"type": "caption.load", "path": str(folder)},
            "out": {"model": "@vlm", "image": "@img", **node}}


def test_a_folder_without_template_is_prompted(prompted: Prompted, tmp_path: Path) -> None:
    assert not (prompted.folder / "chat_template.jinja").exists()
    handle = run_graph({"vlm": {"type": "caption.load", "path": str(prompted.folder)}},
                       tmp_path).outputs["vlm"]["out"]
    assert (handle.task, handle.architecture, handle.caption_prompt) == ("prompted", prompted.cls,
                                                                         prompted.caption)


def test_caption_is_the_task_prompt_greedy_and_beams(prompted: Prompted, pictures: list[Path],
                                                     tmp_path: Path) -> None:
    captions = []
    for beams in (1, 3):
        node = {"type": "caption.generate", "max_new_tokens": 8, "num_beams": beams}
        result = run_graph(_nodes(prompted.folder, pictures[0], node), tmp_path / f"out{beams}")
        ours = result.outputs["out"]["out"]
        theirs, _ = plain_reference(prompted.folder, pictures[0], prompted.format.format(prompted.caption),
                                    prompted.cls, max_new_tokens=8, num_beams=beams)
        assert ours == theirs and theirs
        captions.append(ours)
    assert captions[0] != captions[1]


@pytest.mark.parametrize("beams", [1, 3])
def test_the_question_reaches_the_model(prompted: Prompted, pictures: list[Path], tmp_path: Path,
                                        beams: int) -> None:
    answers, ids = [], []
    for i, question in enumerate(("what colour is the circle?", "what shape is on the left?")):
        node = {"type": "vqa.answer", "question": question, "max_new_tokens": 8, "num_beams": beams}
        result = run_graph(_nodes(prompted.folder, pictures[0], node), tmp_path / f"o{i}")
        answers.append(result.outputs["out"]["out"])
        theirs, input_ids = plain_reference(prompted.folder, pictures[0], prompted.format.format(question),
                                            prompted.cls, max_new_tokens=8, num_beams=beams)
        assert answers[-1] == theirs and theirs
        ids.append(input_ids)
    assert ids[0].shape != ids[1].shape or not torch.equal(ids[0], ids[1])
    if beams == 1:  # (the tiny PaliGemma's 3-beam answers to the two happen to coincide)
        assert answers[0] != answers[1]
