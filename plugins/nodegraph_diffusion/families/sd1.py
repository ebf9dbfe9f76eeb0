"""The SD1.x family (and the tiny demo model of the same architecture): one CLIP encoder, no extras."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodegraph_diffusion.families.base import ModelFamily, PromptRequest

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer."
WIDTHS = {768: "sd15", 32: "tinyworld"}  # cross-attention width -> shipped config
ADAPTER_TYPES = ("full_adapter", "light_adapter")  # T2I-Adapters for SD1.x-shaped UNets


class SD1Family(ModelFamily):
    """Stable Diffusion 1.x: a cross-attention UNet conditioned on one CLIP text encoder's last layer."""

    name = "sd1"
    label = "SD1.x"
    config_names = ("sd15", "tinyworld")
    cross_attention_widths = tuple(WIDTHS)
    vae_configs = ((128, "sd15"), (16, "tinyworld"))

    def recognise_folder(self, index: Mapping[str, Any]) -> bool:
        cls = str(index.get("_class_name", ""))
        return cls.startswith("StableDiffusion") and "XL" not in cls and "text_encoder_2" not in index

    def recognise_keys(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """SD1.x and the tiny model share the layout; the cross-attention width (768 vs 32) tells them
        apart."""
        keys = sorted(shapes)
        probe = next((k for k in keys if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
        if probe is None or not any(k.startswith(CLIP_PREFIX) for k in shapes):
            return None
        return WIDTHS.get(shapes[probe][-1])

    def recognise_config(self, config: Mapping[str, Any]) -> bool:
        """A ControlNet with no added embedding and SD1.x's (or the tiny model's) cross-attention width;
        a T2I-Adapter of the SD1.x types (full, light)."""
        if config.get("_class_name") == "T2IAdapter":
            return config.get("adapter_type") in ADAPTER_TYPES
        return config.get("addition_embed_type") is None and config.get("cross_attention_dim") in WIDTHS

    def encode(self, ctx: Any, handle: Any, request: PromptRequest) -> Any:
        from nodegraph.api import InputError
        from nodegraph_diffusion.clip_encoding import empty_encoding, encode_prompt
        from nodegraph_diffusion.loading import use_text_encoder
        from nodegraph_diffusion.types import Conditioning

        if request.text_2 is not None:
            raise InputError(f"text_2 is for models with two text encoders (SDXL); this {self.label} model "
                             "has one: leave text_2 unset", field="text_2")
        if request.text_3 is not None:
            raise InputError(f"text_3 is for SD3's T5 encoder; this {self.label} model has one text encoder: "
                             "leave text_3 unset", field="text_3")
        text, clip_skip = request.text, request.clip_skip
        with use_text_encoder(ctx, handle) as (tokenizer, model):
            if handle.embeddings:  # textual inversion: `<cat>` -> its tokens, as diffusers rewrites prompts
                from nodegraph_diffusion.embeddings import convert_prompt

                text = convert_prompt(tokenizer, text)
            embeds, ids = encode_prompt(tokenizer, model, text, clip_skip, request.emphasis)
            empty = empty_encoding(tokenizer, model, text, embeds, clip_skip)
        return Conditioning(embeds=embeds.detach().cpu(), prompt=text, token_ids=tuple(int(i) for i in ids),
                            empty=None if empty is None else empty.detach().cpu(), family=self.name)
