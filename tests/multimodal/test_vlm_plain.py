"""Vision-language models prompted without a chat template (PaliGemma, as google's folders ship it): the
node's text equals `generate()` + decode on `processor(text="<image>" + prompt, images=...)`, the way
PaliGemma's docs prompt it; caption.generate's default prompt becomes the model's task prompt ("caption
en"); the question reaches the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.multimodal.helpers import plain_reference, run_graph

CLS = "PaliGemmaForConditionalGeneration"


def _nodes(folder: Path, picture: Path, node: dict[str, Any]) -> dict[str, Any]:
    return {"img": {"type": "core.load_image", "path": str(picture)},
            "vlm": {"type": "caption.load", "path": str(folder)},
            "out": {"model": "@vlm", "image": "@img", **node}}


def test_a_folder_without_template_is_prompted(paligemma_dir: Path, tmp_path: Path) -> None:
    assert not (paligemma_dir / "chat_template.jinja").exists()
    handle = run_graph({"vlm": {"type": "caption.load", "path": str(paligemma_dir)}},
                       tmp_path).outputs["vlm"]["out"]
    assert (handle.task, handle.architecture, handle.caption_prompt) == ("prompted", CLS, "caption en")


def test_caption_is_the_task_prompt_greedy_and_beams(paligemma_dir: Path, pictures: list[Path],
                                                     tmp_path: Path) -> None:
    captions = []
    for beams in (1, 3):
        node = {"type": "caption.generate", "max_new_tokens": 8, "num_beams": beams}
        result = run_graph(_nodes(paligemma_dir, pictures[0], node), tmp_path / f"out{beams}")
        ours = result.outputs["out"]["out"]
        theirs, _ = plain_reference(paligemma_dir, pictures[0], "<image>caption en", CLS, max_new_tokens=8,
                                    num_beams=beams)
        assert ours == theirs and theirs
        captions.append(ours)
    assert captions[0] != captions[1]


@pytest.mark.parametrize("beams", [1, 3])
def test_the_question_reaches_the_model(paligemma_dir: Path, pictures: list[Path], tmp_path: Path,
                                        beams: int) -> None:
    answers, ids = [], []
    for i, question in enumerate(("what colour is the circle?", "what shape is on the left?")):
        node = {"type": "vqa.answer", "question": question, "max_new_tokens": 8, "num_beams": beams}
        result = run_graph(_nodes(paligemma_dir, pictures[0], node), tmp_path / f"o{i}")
        answers.append(result.outputs["out"]["out"])
        theirs, input_ids = plain_reference(paligemma_dir, pictures[0], f"<image>{question}", CLS,
                                            max_new_tokens=8, num_beams=beams)
        assert answers[-1] == theirs and theirs
        ids.append(input_ids)
    assert ids[0].shape != ids[1].shape or not torch.equal(ids[0], ids[1])
    if beams == 1:  # (this tiny model's 3-beam answers to the two happen to coincide)
        assert answers[0] != answers[1]
