"""Vision-language chat models (transformers' image-text-to-text task): which folders are one, and one turn.

LLaVA-1.5/-NeXT, Qwen2-VL/Qwen2.5-VL, SmolVLM/Idefics3, ... folders are told apart from BLIP/GIT by
config.json's `model_type`, looked up in transformers' own table of `AutoModelForImageTextToText` classes
(`MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES`), not by an if-chain of families here: a family transformers
adds is read without a change to this pack. A turn is what transformers documents for these models: the
processor's chat template renders one user message (an image, then the text), the processor tokenises it
with the image (`apply_chat_template(..., tokenize=True, return_dict=True)`), `generate()` runs with the
node's settings, and only the tokens after the prompt are decoded.

Models whose processors build the prompt themselves from a plain task text, and whose folders ship no
chat template, are "prompted" instead — a table by `model_type` (`PLAIN_PROMPTS`) of how their docs write
that text: PaliGemma's processor takes "<image>" then the task ("caption en", "answer en QUESTION") and
adds its BOS and newline; Florence-2's takes a task token ("<MORE_DETAILED_CAPTION>") or plain text and
writes the prompt it stands for (an encoder-decoder: its output is the reply alone; its task
post-processing, `post_process_generation`, is not applied). Checked before any weights load, because a
VLM without them cannot be prompted at all: the folder has an image processor, and a chat template
unless the table names its model type. transformers is imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from nodegraph.api import InputError

CHAT_TASK = "chat"  # CaptionModelHandle.task of these models: caption.generate and vqa.answer both take it
PROMPTED_TASK = "prompted"  # the same, for models prompted with plain text (PLAIN_PROMPTS)
VLM_TASKS = (CHAT_TASK, PROMPTED_TASK)
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")  # what ProcessorMixin reads
DEFAULT_PROMPT = "Describe this image in one sentence."


class PlainPrompt(NamedTuple):
    """How a model without a chat template is prompted: the text as its processor wants it, and the
    caption instruction it is trained on (used when caption.generate's prompt is left at its default)."""

    format: str  # with "{text}"
    caption: str


# model_type -> its plain prompt; only where a folder has no chat template (a template wins)
PLAIN_PROMPTS = {"paligemma": PlainPrompt("<image>{text}", "caption en"),
                 "florence2": PlainPrompt("{text}", "<MORE_DETAILED_CAPTION>")}


def image_text_to_text_class(config: dict[str, Any]) -> str | None:
    """The transformers class `AutoModelForImageTextToText` picks for this config.json (by `model_type`,
    then by an `architectures` entry that is such a class), or None when it is not an image-text-to-text
    model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as TABLE

    found = TABLE.get(str(config.get("model_type", "")))
    if found is not None:
        return str(found)
    classes = set(TABLE.values())
    return next((str(a) for a in config.get("architectures") or [] if a in classes), None)


def _json_keys(file: Path) -> dict[str, Any]:
    """A JSON file's top-level object ({} when absent or not an object): only keys are looked at."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read '{file}': {exc}", field="path") from exc
    return data if isinstance(data, dict) else {}


def has_chat_template(folder: Path) -> bool:
    """Whether the processor (its template files, processor_config.json) or the tokenizer
    (tokenizer_config.json) of the folder carries a chat template."""
    if any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    if (folder / "chat_templates").is_dir() and any((folder / "chat_templates").glob("*.jinja")):
        return True
    return any(_json_keys(folder / name).get("chat_template")
               for name in ("processor_config.json", "tokenizer_config.json"))


def check_vlm_folder(folder: Path, model_type: str) -> PlainPrompt | None:
    """Raise InputError (field `path`) naming the missing file unless the folder has an image processor
    and a chat template (or is of a model type prompted with plain text) — before any weights load.
    Returns how to prompt it when it has no chat template (None: through the template)."""
    processor_config, preprocessor = folder / "processor_config.json", folder / "preprocessor_config.json"
    if not preprocessor.is_file() and "image_processor" not in _json_keys(processor_config):
        raise InputError(f"'{folder}' has no image processor: neither '{preprocessor}' nor an "
                         f"`image_processor` entry in '{processor_config}'; save the model's processor into "
                         "the folder (processor.save_pretrained(folder))", field="path")
    if has_chat_template(folder):
        return None
    if model_type in PLAIN_PROMPTS:
        return PLAIN_PROMPTS[model_type]
    raise InputError(f"'{folder}' has no chat template: no '{folder / CHAT_TEMPLATE_FILES[0]}' (nor "
                     f"{CHAT_TEMPLATE_FILES[1]}, nor a `chat_template` in processor_config.json or "
                     "tokenizer_config.json); caption.generate and vqa.answer build the model's prompt with "
                     "it: copy the model's chat_template.jinja into the folder", field="path")


def chat_template(processor: Any) -> str:
    """The processor's chat template, else its tokenizer's (folders that keep it in tokenizer_config.json)."""
    template = getattr(processor, "chat_template", None) or getattr(
        getattr(processor, "tokenizer", None), "chat_template", None)
    if not template:
        raise InputError("the model's processor has no chat template", field="model")
    return template if isinstance(template, str) else template.get("default", next(iter(template.values())))


def chat_inputs(processor: Any, image: Any, text: str) -> Any:
    """The processor's tensors for one user turn — the image, then `text` — with the generation prompt,
    as transformers documents for image-text-to-text models."""
    turn = [{"type": "image", "image": image}, {"type": "text", "text": text}]
    messages = [{"role": "user", "content": turn}]
    return processor.apply_chat_template(messages, chat_template=chat_template(processor),
                                         add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def plain_inputs(processor: Any, image: Any, text: str, prompt_format: str) -> Any:
    """The processor's tensors for `text` written as the model's docs write it (`prompt_format`), with
    the image: `processor(images=, text=)`, which adds the model's own image tokens and specials."""
    return processor(images=image, text=prompt_format.format(text=text), return_tensors="pt")


def new_tokens(output: Any, input_ids: Any) -> Any:
    """The generated ids after the prompt: decoder-only models return prompt + answer, encoder-decoder
    ones the answer alone (told by whether the output starts with the prompt, not by family)."""
    import torch

    n = input_ids.shape[1]
    starts_with_prompt = output.shape[1] >= n and torch.equal(output[0, :n].cpu(), input_ids[0].cpu())
    return output[0, n:] if starts_with_prompt else output[0]
