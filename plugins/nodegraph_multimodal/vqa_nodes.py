"""Visual question answering: `vqa.answer(image, question)` -> `Text`, with the model's own `generate()`.

The model is a `BlipForQuestionAnswering` folder, or a vision-language chat model (the question is its
user turn, through its chat template), read by `caption.load` (it tells them apart from the folder's
config). A catalogue module: torch and transformers are imported inside the body.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import Image, InputError, NodeContext, node
from nodegraph_multimodal.caption_nodes import Beams, Index, Tokens, generate_text, require_task
from nodegraph_multimodal.types import CaptionModelHandle, Text


@node("vqa.answer", version="1.1.0")
def answer(
    ctx: NodeContext,
    model: Annotated[CaptionModelHandle, Field(description="A question-answering model (caption.load of "
                                                           "a BlipForQuestionAnswering folder or of a "
                                                           "vision-language chat model)")],
    image: Annotated[Image, Field(description="The image the question is about")],
    question: Annotated[str, Field(description="The question, e.g. 'what colour is the circle?'")],
    max_new_tokens: Tokens = 10,
    num_beams: Beams = 1,
    index: Index = 0,
) -> Text:
    """Answer a question about an image (the model's `generate()`: BLIP VQA or a chat VLM) -> Text."""
    require_task(model, "vqa.answer")
    if not question.strip():
        raise InputError("the question is empty", field="question")
    return generate_text(ctx, model, image, index, question, max_new_tokens, num_beams)
