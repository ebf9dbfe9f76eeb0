"""Captioning: image -> `Text`, with transformers' own `generate()` (vqa_nodes.py shares the call).

`caption.load` reads a BLIP (`BlipForConditionalGeneration`, `BlipForQuestionAnswering`) or GIT
(`GitForCausalLM`) folder with its processor, or a vision-language chat model (LLaVA, Qwen2-VL, SmolVLM,
... — whatever `AutoModelForImageTextToText` reads, see vlm.py) with its processor and chat template.
`caption.generate` (and `vqa.answer`) call the model's `generate()` with the node's settings (greedy, or
beam search with `num_beams`), so the text is the one transformers gives; a chat model gets the node's
`prompt` (or the question) as one user turn through its chat template, and only its reply is decoded.
The `Text` output is a `str`, so it links into `diffusion.encode_text`'s `text`.
A catalogue module: torch and transformers are imported inside the bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from nodegraph.api import Image, InputError, NodeContext, node
from nodegraph_multimodal.types import CaptionModelHandle, CaptionRef, Text
from nodegraph_multimodal.vlm import DEFAULT_PROMPT, VLM_TASKS

# transformers architecture -> the task its head does (chat models: vlm.image_text_to_text_class)
ARCHITECTURES = {"BlipForConditionalGeneration": "caption", "GitForCausalLM": "caption",
                 "BlipForQuestionAnswering": "vqa"}
# node -> the tasks whose models it drives, and what to name when a model has none of them
ACCEPTS = {"caption.generate": ("caption", *VLM_TASKS), "vqa.answer": ("vqa", *VLM_TASKS)}
NEEDS = {"caption.generate": "BlipForConditionalGeneration, GitForCausalLM or a vision-language chat model",
         "vqa.answer": "BlipForQuestionAnswering or a vision-language chat model"}

Tokens = Annotated[int, Field(ge=1, le=512, description="Most tokens to generate")]
Beams = Annotated[int, Field(ge=1, le=16, description="Beam search width (1: greedy)")]
Index = Annotated[int, Field(ge=0, description="Which image of the batch")]


def handle_for(folder: Any, config: dict[str, Any]) -> CaptionModelHandle:
    """The handle of a model folder: BLIP/GIT heads by `architectures`, then vision-language models by
    transformers' image-text-to-text table (their folder checked for a chat template — or a plain prompt
    in vlm.PLAIN_PROMPTS — and an image processor)."""
    from nodegraph_diffusion.paths import fingerprint_path

    from nodegraph_multimodal.vlm import CHAT_TASK, PROMPTED_TASK, check_vlm_folder, image_text_to_text_class

    architectures = config.get("architectures") or []
    arch = next((a for a in architectures if a in ARCHITECTURES), None)
    plain = None
    if arch is not None:
        task, cls = ARCHITECTURES[arch], arch
    else:
        found = image_text_to_text_class(config)
        if found is None:
            raise InputError(f"'{folder}' is a {', '.join(architectures) or 'model of unknown architecture'} "
                             f"(model_type {config.get('model_type')!r}); caption.load reads "
                             f"{', '.join(ARCHITECTURES)} and image-text-to-text models "
                             "(AutoModelForImageTextToText)", field="path")
        plain = check_vlm_folder(folder, str(config.get("model_type", "")))
        task, cls = (CHAT_TASK, found) if plain is None else (PROMPTED_TASK, found)
    prompting = () if plain is None else (plain.format, plain.caption)
    # fingerprinted last: a folder that is refused is not hashed first
    return CaptionModelHandle(str(folder.resolve()), fingerprint_path(folder), task, cls, *prompting)


@node("caption.load", version="1.1.0")
def load(
    ctx: NodeContext,
    path: Annotated[CaptionRef, Field(description="A transformers folder with its processor: BLIP "
                                                  "captioning (Salesforce/blip-image-captioning-base), BLIP "
                                                  "VQA (Salesforce/blip-vqa-base), GIT (microsoft/git-base), "
                                                  "or a vision-language chat model with its chat template "
                                                  "(llava-hf/llava-1.5-7b-hf, Qwen/Qwen2-VL-2B-Instruct, "
                                                  "HuggingFaceTB/SmolVLM-Instruct, ...), saved locally; "
                                                  "builtin:tinyblip / tinyblip-vqa (demo world)")],
) -> CaptionModelHandle:
    """Name a captioner, question answerer or vision-language chat model for caption.generate / vqa.answer."""
    from nodegraph_diffusion.paths import resolve_model_ref

    from nodegraph_multimodal.models import check_model_folder, read_config

    folder = resolve_model_ref(str(path), ctx, kind="captioner")
    check_model_folder(folder, "captioning", "BlipForConditionalGeneration")
    return handle_for(folder, read_config(folder))


def _processor_inputs(handle: CaptionModelHandle, processor: Any, picture: Any, text: str | None) -> Any:
    """What the processor makes of the picture and text: a chat turn for chat models, the plain prompt
    for prompted ones, BLIP/GIT's `processor(images=, text=)` (text: the caption prefix or the question)
    otherwise."""
    from nodegraph_multimodal.vlm import CHAT_TASK, PROMPTED_TASK, chat_inputs, plain_inputs

    if handle.task == CHAT_TASK:
        return chat_inputs(processor, picture, text or DEFAULT_PROMPT)
    if handle.task == PROMPTED_TASK:
        return plain_inputs(processor, picture, text or handle.caption_prompt, handle.prompt_format)
    return processor(images=picture, text=text, return_tensors="pt")


def generate_text(ctx: NodeContext, handle: CaptionModelHandle, image: Image, index: int, text: str | None,
                  max_new_tokens: int, num_beams: int) -> Text:
    """One `generate()` call on image `index` (and the text: prefix, prompt or question), decoded without
    specials; of a chat model only the reply (the tokens after the prompt)."""
    import torch

    from nodegraph_multimodal.models import to_pil, use_model
    from nodegraph_multimodal.vlm import new_tokens

    if index >= image.batch:
        raise InputError(f"image {index} is out of range: the batch has {image.batch}", field="index")
    with use_model(ctx, handle.path, handle.fingerprint, handle.architecture) as (processor, model):
        inputs = _processor_inputs(handle, processor, to_pil(image)[index], text)
        device = next(model.parameters()).device
        # ids stay integers; pixels (and any other float input) take the model's dtype
        inputs = {k: v.to(device, model.dtype) if v.is_floating_point() else v.to(device)
                  for k, v in inputs.items()}
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                 do_sample=False)
        ids = new_tokens(out, inputs["input_ids"]) if handle.task in VLM_TASKS else out[0]
        return Text(processor.decode(ids, skip_special_tokens=True).strip())


def require_task(handle: CaptionModelHandle, node_name: str) -> None:
    """InputError on `model` unless the node drives models of the handle's task."""
    if handle.task not in ACCEPTS[node_name]:
        raise InputError(f"'{handle.path}' is a {handle.task} model ({handle.architecture}); {node_name} "
                         f"needs {NEEDS[node_name]}", field="model")


@node("caption.generate", version="1.1.0")
def generate(
    ctx: NodeContext,
    model: Annotated[CaptionModelHandle, Field(description="The captioner (caption.load)")],
    image: Annotated[Image, Field(description="The image to describe")],
    prefix: Annotated[str, Field(description="BLIP/GIT conditional captioning: the caption starts with this "
                                             "text (BLIP: 'a picture of'); empty = unconditional")] = "",
    prompt: Annotated[str, Field(description="Vision-language models: the instruction sent with the image "
                                             "(left at the default, a model prompted without a chat "
                                             "template gets its own task prompt: PaliGemma 'caption en'); "
                                             "BLIP/GIT take `prefix` instead")] = DEFAULT_PROMPT,
    max_new_tokens: Tokens = 30,
    num_beams: Beams = 1,
    index: Index = 0,
) -> Text:
    """Describe an image in words (the model's `generate()`, greedy or beam search) -> Text."""
    require_task(model, "caption.generate")
    if model.task in VLM_TASKS:
        if prefix:
            raise InputError("a vision-language model takes an instruction, not a caption prefix: put it in "
                             "`prompt`", field="prefix")
        if not prompt.strip():
            raise InputError("the prompt is empty", field="prompt")
        instruction = model.caption_prompt if prompt == DEFAULT_PROMPT and model.caption_prompt else prompt
        return generate_text(ctx, model, image, index, instruction, max_new_tokens, num_beams)
    if prompt != DEFAULT_PROMPT:  # a changed instruction would be dropped without a word
        raise InputError(f"{model.architecture} takes no instruction: `prompt` is for vision-language chat "
                         "models; BLIP/GIT caption conditionally with `prefix`", field="prompt")
    return generate_text(ctx, model, image, index, prefix or None, max_new_tokens, num_beams)
