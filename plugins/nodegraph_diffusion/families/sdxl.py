"""The SDXL family (base and refiner): two CLIP encoders, pooled embeds and size micro-conditioning.

Mirrors `StableDiffusionXLPipeline` step for step so the same seed gives the same pixels:
- each encoder's hidden states of the penultimate layer (`hidden_states[-2]`, no final norm; clip skip
  counts further back), concatenated along the feature axis (768 + 1280 for the real base);
- the pooled embeds (`text_embeds`) of the last encoder, a `CLIPTextModelWithProjection`;
- `time_ids` = original size + crop top-left + target size (base), or original size + crop + aesthetic
  score (refiner: its UNet's add-embedding is one id shorter), batched `[negative, positive]` like the
  pipeline and handed to the UNet as `added_cond_kwargs`.
The refiner has only the second encoder (`text_encoder: null` in model_index.json): it is skipped.

Single files (A1111/ComfyUI layout) are told by their text-encoder prefixes: the base holds CLIP ViT-L
under `conditioner.embedders.0.transformer.` and OpenCLIP bigG under `conditioner.embedders.1.model.`,
the refiner bigG alone under `conditioner.embedders.0.model.`; the UNet's cross-attention width (2048,
1280; 64, 32 for the tiny test models) picks the shipped config folder diffusers reads them with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodegraph_diffusion.families.base import DenoiseRequest, ModelFamily, PromptRequest

ENCODERS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
SECOND_ENCODER_PREFIX = "conditioner.embedders.1.model."
FIRST_ENCODER_PREFIX = "conditioner.embedders.0.transformer."
REFINER_ENCODER_PREFIX = "conditioner.embedders.0.model."
UNET_PREFIX = "model.diffusion_model."
# (refiner?, cross-attention width) -> shipped config folder (configs/NAME)
CONFIGS = {(False, 2048): "sdxl", (True, 1280): "sdxl_refiner",
           (False, 64): "tinyxl", (True, 32): "tinyxl-refiner"}
# each component's key prefixes in a single file: each is read alone (not 4 x 6.9 GB), and each text
# encoder gets only its own keys (diffusers' converter picks the layout by which keys are there, and
# the tiny model's two encoders are the same width)
PART_PREFIXES = {"unet": (UNET_PREFIX,), "vae": ("first_stage_model.",),
                 "text_encoder": (FIRST_ENCODER_PREFIX,),
                 "text_encoder_2": (SECOND_ENCODER_PREFIX, REFINER_ENCODER_PREFIX)}
# cross-attention widths of SDXL UNets: base, refiner, the tiny base (the tiny refiner's 32 is the tiny
# SD1.x model's too: an IP-Adapter that wide is taken for SD1.x)
CROSS_ATTENTION_WIDTHS = (2048, 1280, 64)
SIZES = ("original_size", "crop", "target_size")  # each (height, width) / (top, left); 0 = image size
DEFAULT_SCORES = (6.0, 2.5)  # refiner aesthetic score of the positive / negative side (diffusers' defaults)


def _penultimate(captured: list[Any]) -> Any:
    """An encoder call as the SDXL pipeline makes it; the first call's pooled output goes to `captured`."""

    def call(encoder: Any, input_ids: Any, clip_skip: int, mask: Any) -> Any:
        import torch

        device = next(encoder.parameters()).device
        kwargs = {"attention_mask": mask.to(device)} if mask is not None else {}
        with torch.no_grad():
            out = encoder(input_ids.to(device), output_hidden_states=True, **kwargs)
        if not captured and out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds
            captured.append(out[0])
        return out.hidden_states[-(clip_skip + 2)].to(dtype=encoder.dtype)

    return call


class SDXLFamily(ModelFamily):
    """Stable Diffusion XL, base and refiner (diffusers folders and A1111/ComfyUI single files)."""

    name = "sdxl"
    label = "SDXL"
    text_encoders = ("text_encoder_2",)  # the refiner has only this one; the base has both
    # LoRA files as StableDiffusionXLPipeline.load_lora_weights reads them: both text encoders, Kohya
    # UNet names in the original layout (lora_unet_input_blocks_4_1_...)
    lora_pipeline = "StableDiffusionXLPipeline"
    lora_components = ("unet", "text_encoder", "text_encoder_2")
    lora_sgm_names = True
    cross_attention_widths = tuple(sorted({width for _, width in CONFIGS}))
    tokenizers = ("tokenizer_2",)
    config_names = tuple(CONFIGS.values())
    vae_configs = ((128, "sdxl"), (8, "tinyxl"))  # SDXL's VAE: SD1.x's architecture, scaling 0.13025

    def recognise_folder(self, index: Mapping[str, Any]) -> bool:
        return "XL" in str(index.get("_class_name", "")) and "text_encoder_2" in index

    def recognise_keys(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        base = any(k.startswith(SECOND_ENCODER_PREFIX) for k in shapes)
        refiner = not base and any(k.startswith(REFINER_ENCODER_PREFIX) for k in shapes)
        attn = (k for k in sorted(shapes) if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"))
        probe = next(attn, None)
        if not (base or refiner) or probe is None:
            return None
        return CONFIGS.get((refiner, shapes[probe][-1]))

    def refines_only(self, index: Mapping[str, Any]) -> bool:
        """The refiner: its pipeline is img2img only and its UNet takes an aesthetic score."""
        return bool(index.get("requires_aesthetics_score"))

    def single_file_prefixes(self, component: str) -> tuple[str, ...] | None:
        return PART_PREFIXES.get(component)

    def recognise_config(self, config: Mapping[str, Any]) -> bool:
        """SDXL's denoisers (and ControlNets) take the pooled embeds and size ids: `text_time`;
        T2I-Adapter-XL is `full_adapter_xl`."""
        if config.get("_class_name") == "T2IAdapter":
            return config.get("adapter_type") == "full_adapter_xl"
        return config.get("addition_embed_type") == "text_time"

    def recognise_cross_attention(self, width: int) -> bool:
        """Not the tiny refiner's 32 among the LoRA widths: an IP-Adapter that wide is SD1.x's."""
        return width in CROSS_ATTENTION_WIDTHS

    def encode(self, ctx: Any, handle: Any, request: PromptRequest) -> Any:
        from pathlib import Path

        import torch

        from nodegraph.api import InputError
        from nodegraph_diffusion.clip_encoding import encode_plain, encode_prompt
        from nodegraph_diffusion.cond_padding import match_lengths
        from nodegraph_diffusion.loading import use_text_encoder
        from nodegraph_diffusion.types import Conditioning

        if request.text_3 is not None:
            raise InputError("text_3 is for SD3's T5 encoder; SDXL models have no third text encoder: leave "
                             "text_3 unset", field="text_3")
        source = handle.source  # a single file's components are those of its shipped config folder
        root = Path(source.path if source.format == "diffusers" else source.config_dir or "")
        texts = (request.text, request.text if request.text_2 is None else request.text_2)
        present = [(pair, text) for pair, text in zip(ENCODERS, texts, strict=True)
                   if (root / pair[1]).is_dir()]
        if not present:
            looked = " and ".join(repr(str(root / enc)) for _, enc in ENCODERS)
            raise InputError(f"the model at '{root}' has no text encoder folder (looked for {looked})",
                             field="encoder")
        pieces, pooled, first_ids, chunk = [], [], None, 77
        for (tok_name, enc_name), text in present:
            captured: list[Any] = []
            with use_text_encoder(ctx, handle, enc_name, tok_name) as (tokenizer, model):
                if handle.embeddings:  # textual inversion, per tokenizer as the pipeline rewrites prompts
                    from nodegraph_diffusion.embeddings import convert_prompt

                    text = convert_prompt(tokenizer, text)
                embeds, ids = encode_prompt(tokenizer, model, text, request.clip_skip, request.emphasis,
                                            _penultimate(captured))
                chunk = int(tokenizer.model_max_length)
            pieces.append(embeds)
            pooled = captured
            first_ids = ids if first_ids is None else first_ids
        # The empty prompt's encoding pads a shorter side (cond_padding): only a prompt longer than one
        # chunk can need it (its encoders' pieces may differ in length, and a short prompt on the other
        # side of CFG borrows it), so only then is it paid for (one more call per encoder, as SD1.x);
        # an empty prompt is its own
        empties = [embeds if text == "" else None for embeds, (_, text) in zip(pieces, present, strict=True)]
        if any(int(p.shape[1]) > chunk for p in pieces):
            for i, ((tok_name, enc_name), _) in enumerate(present):
                if empties[i] is None:
                    with use_text_encoder(ctx, handle, enc_name, tok_name) as (tokenizer, model):
                        empties[i] = encode_plain(tokenizer, model, "", request.clip_skip, _penultimate([]))[0]
        if len(pieces) == 2 and pieces[0].shape[1] != pieces[1].shape[1]:  # long text vs short text_2
            pieces[0], pieces[1] = match_lengths(pieces[0], pieces[1], empties[0], empties[1])
        embeds = torch.cat(pieces, dim=-1)
        empty = torch.cat(empties, dim=-1).detach().cpu() if all(e is not None for e in empties) else None
        return Conditioning(embeds=embeds.detach().cpu(), prompt=request.text,
                            token_ids=tuple(int(i) for i in first_ids or ()),
                            pooled=pooled[0].detach().cpu() if pooled else None,
                            empty=empty, family=self.name, micro=request.micro)

    def absent_negative(self, source: Any, positive: Any) -> Any | None:
        """Zeros, as StableDiffusionXLPipeline guides without a negative prompt when the model's
        model_index.json says `force_zeros_for_empty_prompt` (SDXL base: true; the refiner: false);
        the negative's size ids are the positive's (the pipeline's `negative_add_time_ids` default)."""
        import json
        from pathlib import Path

        import torch

        from nodegraph_diffusion.types import Conditioning

        root = Path(source.path if source.format == "diffusers" else source.config_dir or "")
        index = root / "model_index.json"
        config = json.loads(index.read_text()) if index.is_file() else {}
        if not config.get("force_zeros_for_empty_prompt", True) or positive.pooled is None:
            return None
        micro = tuple((k, v) for k, v in positive.micro if k != "aesthetic_score")
        return Conditioning(embeds=torch.zeros_like(positive.embeds), pooled=torch.zeros_like(positive.pooled),
                            family=self.name, micro=micro)

    def added_cond_kwargs(self, unet: Any, positive: Any, negative: Any | None,
                          request: DenoiseRequest) -> dict[str, Any] | None:
        import torch

        from nodegraph_diffusion.sampling import batch_pooled

        if positive.pooled is None or (request.do_cfg and negative is not None and negative.pooled is None):
            raise ValueError("SDXL conditioning lacks pooled embeds (encoded by another family's encoder?)")
        pooled_dim = int(positive.pooled.shape[-1])
        per_id = int(unet.config.addition_time_embed_dim)
        count = (int(unet.add_embedding.linear_1.in_features) - pooled_dim) // per_id

        def time_ids(cond: Any, score: float) -> Any:
            micro = dict(cond.micro)
            size = (request.height, request.width)
            original = [int(v) or size[i] for i, v in enumerate(micro.get("original_size", (0, 0)))]
            crop = [int(v) for v in micro.get("crop", (0, 0))]
            target = [int(v) or size[i] for i, v in enumerate(micro.get("target_size", (0, 0)))]
            score = float(micro.get("aesthetic_score") or score)
            ids = [*original, *crop, *target] if count == 6 else [*original, *crop, score]
            return torch.tensor([ids], dtype=request.dtype)

        text_embeds = batch_pooled(positive.pooled, request.batch)
        ids = time_ids(positive, DEFAULT_SCORES[0])
        if request.do_cfg and negative is not None:
            text_embeds = torch.cat([batch_pooled(negative.pooled, request.batch), text_embeds], dim=0)
            ids = torch.cat([time_ids(negative, DEFAULT_SCORES[1]), ids], dim=0)
        return {"text_embeds": text_embeds.to(device=request.device, dtype=request.dtype),
                "time_ids": ids.to(request.device).repeat(request.batch, 1)}
