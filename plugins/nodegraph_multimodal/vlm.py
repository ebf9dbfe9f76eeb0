"""Vision-language chat models (transformers' image-text-to-text task): which folders are one, and one turn.

LLaVA-1.5/-NeXT, Qwen2-VL/Qwen2.5-VL, SmolVLM/Idefics3, ... folders are told apart from BLIP/GIT by
config.json's `model_type`, looked up in transformers' own table of `AutoModelForImageTextToText` classes
(`MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES`), not by an if-chain of families here: a family transformers
adds is read without a change to this pack. A turn is what transformers documents for these models: the
processor's chat template renders one user message (an image, then the text), the processor tokenises it
with the image (`apply_chat_template(..., tokenize=True, return_dict=True)`), `generate()` runs with the
node's settings, and only the tokens after the prompt are decoded.

Checked before any weights load, because a VLM without them cannot be prompted at all: the folder has an
image processor and a chat template. transformers is imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodegraph.api import InputError

CHAT_TASK = "chat"  # CaptionModelHandle.task of these models: caption.generate and vqa.answer both take it
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")  # what ProcessorMixin reads
DEFAULT_PROMPT = "Describe this image in one sentence."


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


def check_vlm_folder(folder: Path) -> None:
    """Raise InputError (field `path`) naming the missing file unless the folder has an image processor
    and a chat template — before any weights load."""
    processor_config, preprocessor = folder / "processor_config.json", folder / "preprocessor_config.json"
    if not preprocessor.is_file() and "image_processor" not in _json_keys(processor_config):
        raise InputError(f"'{folder}' has no image processor: neither '{preprocessor}' nor an "
                         f"`image_processor` entry in '{processor_config}'; save the model's processor into "
                         "the folder (processor.save_pretrained(folder))", field="path")
    if not has_chat_template(folder):
        raise InputError(f"'{folder}' has no chat template: no '{folder / CHAT_TEMPLATE_FILES[0]}' (nor "
                         f"{CHAT_TEMPLATE_FILES[1]}, nor a `chat_template` in processor_config.json or "
                         "tokenizer_config.json); caption.generate and vqa.answer build the model's prompt "
                         "with it: copy the model's chat_template.jinja into the folder", field="path")


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


def new_tokens(output: Any, input_ids: Any) -> Any:
    """The generated ids after the prompt: decoder-only models return prompt + answer, encoder-decoder
    ones the answer alone (told by whether the output starts with the prompt, not by family)."""
    import torch

    n = input_ids.shape[1]
    starts_with_prompt = output.shape[1] >= n and torch.equal(output[0, :n].cpu(), input_ids[0].cpu())
    return output[0, n:] if starts_with_prompt else output[0]
