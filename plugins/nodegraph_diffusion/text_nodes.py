"""Text encoding: prompt -> conditioning, by the model family of the encoder it gets.

The family (families/) decides how: SD1.x one CLIP encoder's last layer; SDXL both encoders'
penultimate layers, the pooled embeds and the size micro-conditioning. The shared CLIP paths (diffusers'
exact short prompts, A1111's long prompts and emphasis) are in clip_encoding.py.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.families import PromptRequest, family_named
from nodegraph_diffusion.types import Conditioning, TextEncoderHandle

Size = Annotated[int, Field(ge=0, le=16384)]


# 1.2: model families (SDXL: text_2, sizes); 1.3: text_3 (SD3's T5); 1.4: t5_max_length
@node("diffusion.encode_text", version="1.4.0", facts=family_facts.encode_facts)
def encode_text(
    ctx: NodeContext,
    encoder: Annotated[TextEncoderHandle, Field(description="Text encoder (with its tokenizer and LoRAs)")],
    text: Annotated[str, Field(description="The prompt; A1111 emphasis like (word:1.3) and [word] works; "
                                           "longer than 75 tokens is split into chunks")],
    clip_skip: Annotated[int, Field(ge=0, le=4, description="Final CLIP layers to skip (SD1.x: 1 = "
                                                            "penultimate, A1111's 'CLIP skip 2'; SDXL "
                                                            "counts from its penultimate default)")] = 0,
    emphasis: Annotated[bool, Field(description="Read (word:1.3)/(word)/[word] as emphasis; off = brackets "
                                                "are literal text")] = True,
    text_2: Annotated[str | None, Field(description="SDXL, SD3: the prompt of the second text encoder "
                                                    "(SD3: CLIP-G; unset = the same text)")] = None,
    text_3: Annotated[str | None, Field(description="SD3: the prompt of the T5 encoder (unset = the same "
                                                    "text)")] = None,
    original_width: Annotated[Size, Field(description="SDXL micro-conditioning original size (0 = the "
                                                      "image's)")] = 0,
    original_height: Annotated[Size, Field(description="SDXL original height (0 = the image's)")] = 0,
    crop_left: Annotated[Size, Field(description="SDXL crop coordinates, left")] = 0,
    crop_top: Annotated[Size, Field(description="SDXL crop coordinates, top")] = 0,
    target_width: Annotated[Size, Field(description="SDXL target size (0 = the image's)")] = 0,
    target_height: Annotated[Size, Field(description="SDXL target height (0 = the image's)")] = 0,
    aesthetic_score: Annotated[float | None, Field(ge=0, le=10, description="SDXL refiner's aesthetic score "
                                                   "(unset: 6 for a positive, 2.5 for a negative prompt)")]
    = None,
    t5_max_length: Annotated[int | None, Field(ge=1, le=512, description="SD3, Flux: T5's token count, "
                                                             "padded/truncated (the pipelines' "
                                                             "max_sequence_length; unset: SD3 256, Flux "
                                                             "512; FLUX.1-schnell: 256)")] = None,
) -> Conditioning:
    """Encode a prompt into conditioning for the encoder's model family (SD1.x, SDXL, ...)."""
    try:
        family = family_named(encoder.source.family)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), field="encoder") from exc
    micro = (("aesthetic_score", aesthetic_score), ("crop", (crop_top, crop_left)),
             ("original_size", (original_height, original_width)),
             ("target_size", (target_height, target_width)))
    if t5_max_length is not None and family.t5_max_length is None:
        raise InputError(f"{family.label} models have no T5 encoder: leave t5_max_length unset",
                         field="t5_max_length")
    request = PromptRequest(text, text_2, clip_skip, emphasis, micro, text_3, t5_max_length)
    return family.encode(ctx, encoder, request)
