"""Port types of the multimodal pack (light: no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodegraph_diffusion.paths import ModelRef


class Text(str):
    """Text a model wrote (a caption, an answer).

    A `str` subclass on purpose: a link fits an input when the output type is a subclass of the input's,
    so a `Text` links into every `str` input — `diffusion.encode_text`'s `text` among them — and caption →
    prompt → regenerate is one graph."""

    __slots__ = ()


class ClipRef(ModelRef):
    """A transformers CLIPModel folder (config, weights, processor files) or an open_clip folder
    (open_clip_config.json + weights); searched in `clip` folders."""

    kind = "clip"


class CaptionRef(ModelRef):
    """A transformers BLIP/GIT folder (captioning or question answering), or a vision-language chat model
    folder (image-text-to-text, with its chat template), with its processor files."""

    kind = "captioner"


@dataclass(frozen=True)
class ClipModelHandle:
    """Where a CLIP model and its processor are; the residency key is the folder's fingerprint.

    `layout` says how the folder is read: "transformers" (CLIPModel.from_pretrained) or "open_clip"
    (converted to a CLIPModel as it loads, open_clip_folders.py)."""

    __nodegraph_resident__ = True

    path: str
    fingerprint: str
    layout: str = "transformers"


@dataclass(frozen=True)
class CaptionModelHandle:
    """Where a BLIP-style captioner or VQA model, or a vision-language chat model, and its processor are;
    `task` says which head it has (a chat or prompted model answers both captions and questions)."""

    __nodegraph_resident__ = True

    path: str
    fingerprint: str
    task: str  # "caption" | "vqa" | "chat" | "prompted"
    architecture: str  # the transformers class that reads it (config.json `architectures`)
    # "prompted" models (no chat template; their processor builds the prompt): how the text is written,
    # and the caption instruction they are trained on (vlm.PLAIN_PROMPTS)
    prompt_format: str = "{text}"
    caption_prompt: str = ""


@dataclass(frozen=True, eq=False)
class Scores:
    """A similarity matrix (images, texts) as CLIPModel's `logits_per_image` gives it (scaled cosine).

    `texts` are the prompts of the columns; `values` a CPU float32 tensor."""

    values: Any  # torch.Tensor (images, texts)
    texts: tuple[str, ...] = ()
