"""Captioning: image -> `Text`, with transformers' own `generate()` (vqa_nodes.py shares the call).

`caption.load` reads a BLIP (`BlipForConditionalGeneration`, `BlipForQuestionAnswering`) or GIT
(`GitForCausalLM`) folder with its processor; `caption.generate` (and `vqa.answer`) call the model's
`generate()` with the node's settings (greedy, or beam search with `num_beams`), so the text is the one
transformers gives. The `Text` output is a `str`, so it links into `diffusion.encode_text`'s `text`.
A catalogue module: torch and transformers are imported inside the bodies.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import Image, InputError, NodeContext, node
from nodegraph_multimodal.types import CaptionModelHandle, CaptionRef, Text

# transformers architecture -> the task its head does
ARCHITECTURES = {"BlipForConditionalGeneration": "caption", "GitForCausalLM": "caption",
                 "BlipForQuestionAnswering": "vqa"}
MODEL_CLASS = {"caption": ("BlipForConditionalGeneration", "GitForCausalLM"),
               "vqa": ("BlipForQuestionAnswering",)}

Tokens = Annotated[int, Field(ge=1, le=512, description="Most tokens to generate")]
Beams = Annotated[int, Field(ge=1, le=16, description="Beam search width (1: greedy)")]
Index = Annotated[int, Field(ge=0, description="Which image of the batch")]


@node("caption.load", version="1.0.0")
def load(
    ctx: NodeContext,
    path: Annotated[CaptionRef, Field(description="A transformers folder with its processor: BLIP "
                                                  "captioning (Salesforce/blip-image-captioning-base), BLIP "
                                                  "VQA (Salesforce/blip-vqa-base) or GIT (microsoft/git-base)"
                                                  ", saved locally; builtin:tinyblip / tinyblip-vqa "
                                                  "(random)")],
) -> CaptionModelHandle:
    """Name a captioning or question-answering model for caption.generate / vqa.answer."""
    from nodegraph_diffusion.paths import fingerprint_path, resolve_model_ref

    from nodegraph_multimodal.models import check_model_folder, read_config

    folder = resolve_model_ref(str(path), ctx, kind="captioner")
    check_model_folder(folder, "captioning", "BlipForConditionalGeneration")
    architectures = read_config(folder).get("architectures") or []
    arch = next((a for a in architectures if a in ARCHITECTURES), None)
    if arch is None:
        raise InputError(f"'{folder}' is a {', '.join(architectures) or 'model of unknown architecture'}; "
                         f"caption.load reads {', '.join(ARCHITECTURES)}", field="path")
    return CaptionModelHandle(str(folder.resolve()), fingerprint_path(folder), ARCHITECTURES[arch], arch)


def generate_text(ctx: NodeContext, handle: CaptionModelHandle, image: Image, index: int, text: str | None,
              max_new_tokens: int, num_beams: int) -> Text:
    """One `generate()` call on image `index` (and the text prefix or question), decoded without specials."""
    import torch

    from nodegraph_multimodal.models import to_pil, use_model

    if index >= image.batch:
        raise InputError(f"image {index} is out of range: the batch has {image.batch}", field="index")
    with use_model(ctx, handle.path, handle.fingerprint, handle.architecture) as (processor, model):
        inputs = processor(images=to_pil(image)[index], text=text, return_tensors="pt")
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                 do_sample=False)
        return Text(processor.decode(out[0], skip_special_tokens=True).strip())


def require_task(handle: CaptionModelHandle, task: str, node_name: str) -> None:
    if handle.task != task:
        raise InputError(f"'{handle.path}' is a {handle.task} model; {node_name} needs one of "
                         f"{', '.join(MODEL_CLASS[task])}", field="model")


@node("caption.generate", version="1.0.0")
def generate(
    ctx: NodeContext,
    model: Annotated[CaptionModelHandle, Field(description="The captioner (caption.load)")],
    image: Annotated[Image, Field(description="The image to describe")],
    prefix: Annotated[str, Field(description="Conditional captioning: the caption starts with this text "
                                             "(BLIP: 'a picture of'); empty = unconditional")] = "",
    max_new_tokens: Tokens = 30,
    num_beams: Beams = 1,
    index: Index = 0,
) -> Text:
    """Describe an image in words (BLIP/GIT `generate()`, greedy or beam search) -> Text."""
    require_task(model, "caption", "caption.generate")
    return generate_text(ctx, model, image, index, prefix or None, max_new_tokens, num_beams)
