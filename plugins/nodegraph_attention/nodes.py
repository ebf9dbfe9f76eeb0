"""Nodes of the attention pack: capture attention maps and render them; prompt-to-prompt edits.

The heavy lifting lives in `capture.py`, `p2p.py` (+ `alignment.py`) and `processors.py`; these
functions only adapt ports and turn bad input into `InputError`s. The port types are in `types.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from nodegraph_core.types import Image
from nodegraph_diffusion.loading import use_tokenizer
from nodegraph_diffusion.types import Conditioning, Latents, TextEncoderHandle
from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_attention.types import AttentionCapture, AttentionMaps, P2PEdit

# A catalogue module: torch, OpenCV and the hook machinery are imported inside the node bodies, so
# listing and validating graphs never pay for them (docs/plugins.md).

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


@node("attention.capture_maps", version="1.0.0")
def capture_maps(
    name: Annotated[str, Field(min_length=1, description="Key of the maps in the sampler output's extras; "
                                                         "distinct per capture in one sampler")]
    = "attention_maps",
    resolutions: Annotated[list[int], Field(description="Attention-map heights (latent positions) to "
                                                        "record, e.g. [16] at 512 px; empty = all")] = [],  # noqa: B006
    start: Annotated[float, Field(ge=0.0, le=1.0, description="Fraction of the steps where recording starts")]
    = 0.0,
    end: Annotated[float, Field(ge=0.0, le=1.0, description="Fraction of the steps where recording ends")] = 1.0,
) -> AttentionCapture:
    """Record cross-attention maps per token during sampling (a sampler condition)."""
    if end <= start:
        raise InputError(f"end ({end}) must be after start ({start})", field="end")
    return AttentionCapture(key=name, resolutions=tuple(resolutions), start=start, end=end)


@node("attention.maps_to_images", version="1.1.0")  # 1.1: images labelled by word
def maps_to_images(
    ctx: NodeContext,
    latents: Annotated[Latents, Field(description="The sampler output that ran with the capture")],
    capture: Annotated[AttentionCapture, Field(description="The capture condition given to that sampler")],
    encoder: Annotated[TextEncoderHandle, Field(description="Text encoder (its tokenizer finds the words)")],
    prompt: Annotated[Conditioning, Field(description="The prompt the maps belong to")],
    words: Annotated[list[str], Field(description="Words to show, one image each; empty = every word")]
    = [],  # noqa: B006
    image: Annotated[Image | None, Field(description="Decoded image to draw the heat maps over")] = None,
    index: Annotated[int, Field(ge=0, description="Which image of the batch")] = 0,
) -> Image:
    """Heat maps of where each word attended, one image per word, over the generated image.

    Each image is labelled with its word (made file-safe, `_2` on a repeat), so `core.save_image` with
    `{label}` in its path names the files by word."""
    from nodegraph_attention import heatmaps
    from nodegraph_attention.alignment import word_token_indices
    from nodegraph_attention.labels import word_labels

    found = latents.extras.get(capture.key)
    if not isinstance(found, AttentionMaps):
        raise InputError(f"these latents carry no attention maps '{capture.key}': give the sampler that "
                         "made them this capture in its `conditions`", field="latents")
    if index >= found.maps.shape[0]:
        raise InputError(f"index {index} is outside the batch of {found.maps.shape[0]}", field="index")
    text_words = prompt.prompt.split(" ")
    chosen = list(words) or [w for w in text_words if w]
    missing = [w for w in chosen if w not in text_words]
    if missing:
        raise InputError(f"{missing} not in the prompt {prompt.prompt!r}", field="words")
    with use_tokenizer(ctx, encoder) as tokenizer:
        groups = [word_token_indices(tokenizer, prompt.prompt, w, found.maps.shape[1]) for w in chosen]
    maps = heatmaps.normalise(heatmaps.word_maps(found.maps[index], groups))
    if image is not None:
        pixels = image.pixels[min(index, image.batch - 1)]
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    else:
        pixels = None
        size = (int(latents.samples.shape[-2]) * 8, int(latents.samples.shape[-1]) * 8)
    return Image(heatmaps.overlay(maps, size, pixels), labels=word_labels(chosen))


class P2POutputs(NamedTuple):
    positive: Conditioning
    edit: P2PEdit


@node("attention.prompt_to_prompt", version="1.0.0")
def prompt_to_prompt(
    ctx: NodeContext,
    encoder: Annotated[TextEncoderHandle, Field(description="Text encoder (its tokenizer aligns the words)")],
    source: Annotated[Conditioning, Field(description="The source prompt")],
    edited: Annotated[Conditioning, Field(description="The edited prompt")],
    mode: Annotated[Literal["replace", "refine", "reweight"], Field(
        description="replace: swap words (same word count); refine: add words; reweight: scale words")]
    = "replace",
    cross_replace: Annotated[float, Field(ge=0.0, le=1.0, description="Fraction of steps the source's "
                                                                      "cross-attention is injected")] = 0.8,
    cross_replace_words: Annotated[dict[str, float], Field(
        description="Per edited-prompt word override of cross_replace, e.g. {lion: 0.4}")] = {},  # noqa: B006
    self_replace: Annotated[float, Field(ge=0.0, le=1.0, description="Fraction of steps the source's "
                                                                     "self-attention is injected")] = 0.4,
    reweight: Annotated[dict[str, float], Field(
        description="Attention scale per edited-prompt word, e.g. {smiling: 5}; any mode")] = {},  # noqa: B006
    local_blend: Annotated[list[str], Field(
        description="Words (of either prompt) whose attention masks where the image may change")]
    = [],  # noqa: B006
    blend_threshold: Annotated[float, Field(ge=0.0, le=1.0, description="Local-blend mask threshold")] = 0.3,
    blend_start: Annotated[float, Field(ge=0.0, le=1.0, description="Fraction of steps before blending "
                                                                    "starts")] = 0.0,
) -> P2POutputs:
    """Prompt-to-prompt: render source and edited prompt from the same noise, editing attention."""
    from nodegraph_attention.p2p import make_edit, pair_conditioning

    for field, cond in (("source", source), ("edited", edited)):
        if not cond.prompt:
            raise InputError("needs the prompt text (use diffusion.encode_text)", field=field)
    with use_tokenizer(ctx, encoder) as tokenizer:
        try:
            edit = make_edit(tokenizer, source, edited, mode, cross_replace, dict(cross_replace_words),
                             self_replace, dict(reweight), list(local_blend), blend_threshold, blend_start)
        except ValueError as exc:
            raise InputError(str(exc), field="edited") from exc
    return P2POutputs(pair_conditioning(source, edited), edit)
