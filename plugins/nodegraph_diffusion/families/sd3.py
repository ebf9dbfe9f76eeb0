"""The SD3 / SD3.5 family: an MMDiT transformer denoiser, three text encoders, flow matching.

Mirrors `StableDiffusion3Pipeline` step for step so the same seed gives the same pixels:
- prompts: CLIP-L (`text`), CLIP-G (`text_2`, default `text`) and T5 (`text_3`, default `text`), each
  as the pipeline reads it: CLIP padded/truncated to 77 tokens, the penultimate hidden states
  (`hidden_states[-2]`, clip skip counts further back) and the projected pooled output; T5 padded to
  `max_sequence_length` (256, or encode_text's `t5_max_length`) and its last hidden states. The two CLIP
  states side by side are zero-padded to T5's width and put before the T5 tokens (77 + 256 tokens); the
  pooled outputs side by side become `pooled_projections`. A model without T5 (`text_encoder_3: null`,
  as diffusers allows) gets zeros in T5's place. No A1111 emphasis or 75-token chunking: the pipeline
  truncates.
- the transformer call: `hidden_states`, `timestep=t.expand(batch)`, `encoder_hidden_states`,
  `pooled_projections`, `joint_attention_kwargs` (see `denoise`), CFG batched `[negative, positive]`;
- timesteps: `set_timesteps(steps)` of the model's `FlowMatchEulerDiscreteScheduler` (SD3.5's config:
  shift 3), with `mu` from the latent token count only if the config asks for dynamic shifting;
- latents: 16 channels; the VAE's `shift_factor` (vae_math.py applies it wherever a VAE has one).
Only flow-matching schedulers fit these models (`check_scheduler`). SD3 ControlNets add
`block_controlnet_hidden_states` (nodegraph_control/sd3_controlnet.py). LoRA files: diffusers/peft
layout (sd3_lora.py).

Single files (ComfyUI/Stability layout): the transformer under `model.diffusion_model.` (the original
MMDiT names: `joint_blocks.N.x_block...`), the VAE under `first_stage_model.` and, where the file has
them, CLIP-L, CLIP-G and T5-XXL under `text_encoders.clip_l/clip_g/t5xxl.transformer.` (transformers'
own names). The transformer's width (`x_embedder.proj.weight`: 64 per block) picks the shipped config:
1536 with dual-attention blocks (`x_block.attn2`) = SD3.5 medium, 2432 = SD3.5 large (and large-turbo,
the same architecture), 32 = the tiny test model. SD3.0 medium (1536 without dual attention) has no
shipped config and is refused. Files without text encoders (Stability's own `sd3.5_medium.safetensors`)
take them from `diffusion.load_text_encoders`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from nodegraph_diffusion.families.base import DenoiseRequest, ModelFamily, PromptRequest

CLIP_ENCODERS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
T5_ENCODER = ("tokenizer_3", "text_encoder_3")
T5_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length
PATCH_SIZE = 2  # every SD3/SD3.5 transformer's (the dynamic-shift token count divides by it)
DENOISER_PREFIX = "model.diffusion_model."
# each component's key prefixes in a single file (ComfyUI's SD3 checkpoints)
PART_PREFIXES = {"transformer": (DENOISER_PREFIX,), "vae": ("first_stage_model.",),
                 "text_encoder": ("text_encoders.clip_l.",), "text_encoder_2": ("text_encoders.clip_g.",),
                 "text_encoder_3": ("text_encoders.t5xxl.",)}
# transformer width (x_embedder rows) -> shipped config; 1536 only with dual attention (SD3.5 medium)
CONFIGS = {1536: "sd35-medium", 2432: "sd35-large", 32: "tinysd3"}


def _root(source: Any) -> Any:
    from pathlib import Path

    return Path(source.path if source.format == "diffusers" else source.config_dir or "")


class SD3Family(ModelFamily):
    """Stable Diffusion 3 and 3.5 (medium, large, large-turbo) diffusers folders."""

    name = "sd3"
    label = "SD3"
    latent_channels = 16
    text_encoders = ("text_encoder", "text_encoder_2")  # T5 (text_encoder_3) may be left out
    tokenizers = ("tokenizer",)
    lora_pipeline = "StableDiffusion3Pipeline"
    lora_components = ("transformer", "text_encoder", "text_encoder_2")  # CLIP-L, CLIP-G; not T5
    denoiser_component = "transformer"
    denoiser_class = "SD3Transformer2DModel"
    t5_max_length = T5_LENGTH
    skip_layers = True  # SD3Transformer2DModel's `skip_layers` (skip_layers.py: skip-layer guidance)
    concat_conditions = ()  # no SD3 model reads extra input channels from a condition
    config_names = tuple(CONFIGS.values())
    vae_configs = ((128, "sd35-medium"), (8, "tinysd3"))  # 16 latent channels (vae_files tells by them)
    t5_components = T5_ENCODER
    encoder_files = (("clip_l", "text_encoder", True), ("clip_g", "text_encoder_2", True),
                     ("t5", "text_encoder_3", False))  # without T5: zeros, as the pipeline
    encoder_config = "sd35-medium"  # SD3.5 medium and large share their text encoders

    def recognise_folder(self, index: Mapping[str, Any]) -> bool:
        return str(index.get("_class_name", "")).startswith("StableDiffusion3")

    def recognise_keys(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        patch = shapes.get(DENOISER_PREFIX + "x_embedder.proj.weight")
        if not patch or DENOISER_PREFIX + "joint_blocks.0.context_block.attn.qkv.weight" not in shapes:
            return None
        width = int(patch[0])
        dual = any(k.startswith(DENOISER_PREFIX + "joint_blocks.") and ".x_block.attn2." in k for k in shapes)
        if width == 1536 and not dual:
            return None  # SD3.0 medium: no shipped config
        return CONFIGS.get(width)

    def single_file_prefixes(self, component: str) -> tuple[str, ...] | None:
        return PART_PREFIXES.get(component)

    def file_problem(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        bare = "x_embedder.proj.weight" in shapes and "joint_blocks.0.context_block.attn.qkv.weight" in shapes
        patch = shapes.get(DENOISER_PREFIX + "x_embedder.proj.weight") or shapes.get("x_embedder.proj.weight")
        if patch and int(patch[0]) == 1536 and not any(".x_block.attn2." in k for k in shapes):
            return "is an SD3 (3.0) medium transformer: only SD3.5 medium and large have shipped configs"
        if bare:
            return ("is an SD3 transformer without the checkpoint prefixes (a transformer-only file): "
                    "read it with diffusion.load_transformer")
        if patch:
            return (f"is an SD3 transformer {patch[0]} wide, of no shipped config (SD3.5 medium 1536, "
                    "large 2432)")
        return None

    def lora_state_dict(self, source: Any, denoiser: Any = None) -> tuple[dict[str, Any], Any, Any]:
        """diffusers/peft files only, as the pipeline (sd3_lora.py)."""
        from nodegraph_diffusion.sd3_lora import sd3_lora_state_dict

        return sd3_lora_state_dict(source)

    def load_lora_into_denoiser(self, state: dict[str, Any], alphas: Any, model: Any, adapter_name: str,
                                metadata: Any) -> None:
        from nodegraph_diffusion.sd3_lora import load_into_transformer

        load_into_transformer(state, alphas, model, adapter_name, metadata)

    def recognise_config(self, config: Mapping[str, Any]) -> bool:
        """SD3 transformers and ControlNets (SD3ControlNetModel) project captions
        (`caption_projection_dim`); the other families' models do not."""
        return "caption_projection_dim" in config

    def recognise_denoiser_keys(self, keys: Collection[str]) -> bool:
        """Stability's layout (`joint_blocks.*`, sd3.5_medium.safetensors's transformer) or diffusers'
        (`transformer_blocks.*` with a patch embedding, `pos_embed.proj`)."""
        keys = set(keys)
        return any(k.startswith("joint_blocks.") for k in keys) or (
            "pos_embed.proj.weight" in keys and any(k.startswith("transformer_blocks.") for k in keys))

    def denoiser_state(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """Stability's layout by diffusers' converter (it reads the widths off the tensors)."""
        from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

        if not any(k.startswith("joint_blocks.") for k in state):
            return state
        state = dict(state)  # the converter pops what it converts
        return dict(convert_sd3_transformer_checkpoint_to_diffusers(state))

    def conditioning_width(self, root: Any, index: Mapping[str, Any]) -> int | None:
        """Not compared with a UNet's cross-attention width: the transformer has none."""
        return None

    def check_scheduler(self, class_name: str) -> str | None:
        if class_name.startswith("FlowMatch"):
            return None
        return (f"{class_name} is not a flow-matching scheduler: SD3 models predict a velocity and sample "
                "only with flow-matching schedulers (the model's own: scheduler 'default')")

    def encode(self, ctx: Any, handle: Any, request: PromptRequest) -> Any:
        import json

        import torch

        from nodegraph_diffusion.file_parts import has_component
        from nodegraph_diffusion.loading import use_text_encoder
        from nodegraph_diffusion.types import Conditioning

        root = _root(handle.source)
        texts = (request.text, request.text if request.text_2 is None else request.text_2)
        states, pooled, first_ids = [], [], ()
        for (tok_name, enc_name), text in zip(CLIP_ENCODERS, texts, strict=True):
            with use_text_encoder(ctx, handle, enc_name, tok_name) as (tokenizer, model):
                device = next(model.parameters()).device
                ids = tokenizer(text, padding="max_length", max_length=int(tokenizer.model_max_length),
                                truncation=True, return_tensors="pt").input_ids
                with torch.no_grad():
                    out = model(ids.to(device), output_hidden_states=True)
                pooled.append(out[0])
                states.append(out.hidden_states[-(request.clip_skip + 2)].to(dtype=model.dtype))
                first_ids = first_ids or tuple(int(i) for i in ids[0])
        clip = torch.cat(states, dim=-1)
        text_3 = request.text if request.text_3 is None else request.text_3
        length = request.t5_length or T5_LENGTH
        if has_component(handle.source, T5_ENCODER[1]):
            with use_text_encoder(ctx, handle, T5_ENCODER[1], T5_ENCODER[0]) as (tokenizer, model):
                device = next(model.parameters()).device
                ids = tokenizer(text_3, padding="max_length", max_length=length, truncation=True,
                                add_special_tokens=True, return_tensors="pt").input_ids
                with torch.no_grad():
                    t5 = model(ids.to(device))[0].to(dtype=model.dtype)
        else:  # no T5: zeros of its shape, as the pipeline
            config = json.loads((root / self.denoiser_component / "config.json").read_text())
            t5 = torch.zeros((1, length, int(config["joint_attention_dim"])), dtype=clip.dtype,
                             device=clip.device)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        embeds = torch.cat([clip, t5.to(clip.device)], dim=-2)
        return Conditioning(embeds=embeds.detach().cpu(), prompt=request.text, token_ids=first_ids,
                            pooled=torch.cat(pooled, dim=-1).detach().cpu(), family=self.name)

    def added_cond_kwargs(self, unet: Any, positive: Any, negative: Any | None,
                          request: DenoiseRequest) -> dict[str, Any] | None:
        """`pooled_projections`, batched like the embeds ([negative, positive] with CFG)."""
        import torch

        from nodegraph_diffusion.sampling import batch_pooled

        self.require_whole_patches(request, PATCH_SIZE)
        if positive.pooled is None or (request.do_cfg and negative is not None and negative.pooled is None):
            raise ValueError("SD3 conditioning lacks pooled embeds (encoded by another family's encoder?)")
        pooled = batch_pooled(positive.pooled, request.batch)
        if request.do_cfg and negative is not None:
            pooled = torch.cat([batch_pooled(negative.pooled, request.batch), pooled], dim=0)
        return {"pooled_projections": pooled.to(device=request.device, dtype=request.dtype)}

    def set_timesteps(self, scheduler: Any, steps: int, device: Any, latent_shape: tuple[int, ...]) -> None:
        """As the pipeline's `retrieve_timesteps`: plain, or with `mu` for dynamic shifting."""
        config = scheduler.config
        if not config.get("use_dynamic_shifting", None):
            scheduler.set_timesteps(steps, device=device)
            return
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        seq_len = (int(latent_shape[-2]) // PATCH_SIZE) * (int(latent_shape[-1]) // PATCH_SIZE)
        mu = calculate_shift(seq_len, config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.16))
        scheduler.set_timesteps(steps, device=device, mu=mu)

    def skipped_steps(self, steps: int, denoise: float) -> int:
        """As StableDiffusion3Img2ImgPipeline.get_timesteps:
        `int(max(steps - min(steps * strength, steps), 0))`."""
        return int(max(steps - min(steps * denoise, steps), 0))

    def denoise(self, model: Any, latent_in: Any, t: Any, embeds: Any, extra: dict[str, Any]) -> Any:
        from nodegraph_diffusion.sampling import SamplingError

        added = extra.pop("added_cond_kwargs", None) or {}
        attention = extra.pop("cross_attention_kwargs", None)
        control = extra.pop("block_controlnet_hidden_states", None)  # SD3 ControlNets' residuals
        skip = extra.pop("skip_layers", None)  # skip-layer guidance's blocks (skip_layers.py)
        if extra:
            raise SamplingError(f"SD3 transformers take no {', '.join(sorted(extra))} (UNet control units "
                                "such as ControlNet and T2I-Adapter do not fit them)")
        return model(
            hidden_states=latent_in,
            timestep=t.expand(latent_in.shape[0]),
            encoder_hidden_states=embeds,
            pooled_projections=added["pooled_projections"],
            block_controlnet_hidden_states=control,
            joint_attention_kwargs=attention,
            return_dict=False,
            skip_layers=skip,
        )[0]
