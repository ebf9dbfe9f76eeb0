"""The Flux.1 family (dev, schnell): a flow-matching MMDiT transformer on CLIP-L's pooled output and T5.

Mirrors `FluxPipeline` operation for operation, so the same seed gives the same pixels:
- prompts: CLIP-L's *pooled* output only (`pooler_output`, 77 tokens) and T5's last hidden states,
  padded to `max_sequence_length` (512, the pipeline's default); `text_2` is T5's own prompt (the
  pipeline's `prompt_2`). Text is read literally: no emphasis syntax, no CLIP skip, as the pipeline;
- the transformer (`FluxTransformer2DModel`, folder `transformer`) reads latents packed in 2x2 patches
  with position ids, `timestep / 1000`, and, for guidance-distilled models (FLUX.1-dev: its config's
  `guidance_embeds`), the guidance scale as an input. It comes from the conditioning (`micro`
  "guidance", set by `diffusion.flux_guidance`), else the pipeline's default 3.5; FLUX.1-schnell has
  no guidance input and ignores it;
- true CFG (the pipeline's `true_cfg_scale`: the sampler's `cfg` > 1 with a negative) calls the
  transformer twice per step, unbatched, positive first, as the pipeline does; the loop then combines
  them with the pipeline's formula;
- the schedule: flow-matching sigmas `linspace(1, 1/steps, steps)`, shifted by `mu` from the image's
  token count where the scheduler config says `use_dynamic_shifting` (flux_sampling.py).
Latents stay unpacked (B, 16, h, w) in the graph; packing happens inside each denoiser call.

Single files: ComfyUI's all-in-one checkpoints (Comfy-Org's `flux1-dev-fp8.safetensors`) hold the BFL
transformer under `model.diffusion_model.` (`double_blocks`, `single_blocks`), the VAE under `vae.` and
CLIP-L and T5-XXL under `text_encoders.clip_l/t5xxl.transformer.`. `guidance_in` tells dev from schnell
(the shipped configs flux-dev, flux-schnell); a transformer 32 wide is the tiny test model. A file with
the transformer alone (BFL's `flux1-dev.safetensors`, ComfyUI's `models/unet`) is not a full model:
`diffusion.load_transformer` reads it, `diffusion.load_text_encoders` and `diffusion.load_vae` the rest.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from nodegraph_diffusion.families.base import DenoiseRequest, ModelFamily, PromptRequest

T5_MAX_LENGTH = 512  # FluxPipeline's max_sequence_length default (and its maximum)
DEFAULT_GUIDANCE = 3.5  # FluxPipeline's guidance_scale default
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
DENOISER_PREFIX = "model.diffusion_model."
PART_PREFIXES = {"transformer": (DENOISER_PREFIX,), "vae": ("vae.",),
                 "text_encoder": ("text_encoders.clip_l.",), "text_encoder_2": ("text_encoders.t5xxl.",)}
# (transformer width, guidance-distilled) -> shipped config (img_in: 64 inputs; Fill/Depth have none)
CONFIGS = {(3072, True): "flux-dev", (3072, False): "flux-schnell", (32, True): "tinyflux"}
CONTROLNET_KWARGS = ("controlnet_block_samples", "controlnet_single_block_samples",
                     "controlnet_blocks_repeat")


class FluxFamily(ModelFamily):
    """Flux.1 dev and schnell (diffusers folders: black-forest-labs/FLUX.1-dev, FLUX.1-schnell)."""

    name = "flux"
    label = "Flux.1"
    latent_channels = 16
    vae_scale = 8
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")
    lora_pipeline = "FluxPipeline"
    lora_components = ("transformer", "text_encoder")  # CLIP-L; diffusers drops T5 LoRA weights
    lora_markers = ("single_transformer_blocks", "single_blocks", "double_blocks")
    denoiser_component = "transformer"
    denoiser_class = "FluxTransformer2DModel"
    t5_max_length = T5_MAX_LENGTH  # FLUX.1-schnell's users pass 256 (diffusers' example); the default is 512
    concat_conditions = ((80, "a Fill model (FLUX.1-Fill-dev): diffusion.flux_fill's condition"),)
    config_names = tuple(CONFIGS.values())
    vae_configs = ((128, "flux-dev"), (8, "tinyflux"))  # 16 latent channels (vae_files tells by them)
    t5_components = ("tokenizer_2", "text_encoder_2")
    encoder_files = (("clip_l", "text_encoder", True), ("t5", "text_encoder_2", True))
    encoder_config = "flux-dev"  # FLUX.1-dev and schnell share their text encoders

    def recognise_keys(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """A ComfyUI all-in-one checkpoint: the transformer and its VAE or text encoders in one file."""
        img_in = shapes.get(DENOISER_PREFIX + "img_in.weight")
        if not img_in or DENOISER_PREFIX + "double_blocks.0.img_attn.norm.key_norm.scale" not in shapes:
            return None
        others = PART_PREFIXES["vae"] + PART_PREFIXES["text_encoder"] + PART_PREFIXES["text_encoder_2"]
        if int(img_in[1]) != 64 or not any(k.startswith(others) for k in shapes):
            return None
        guidance = DENOISER_PREFIX + "guidance_in.in_layer.weight" in shapes
        return CONFIGS.get((int(img_in[0]), guidance))

    def single_file_prefixes(self, component: str) -> tuple[str, ...] | None:
        return PART_PREFIXES.get(component)

    def file_problem(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        probe = "double_blocks.0.img_attn.norm.key_norm.scale"
        img_in = shapes.get(DENOISER_PREFIX + "img_in.weight") or shapes.get("img_in.weight")
        if not img_in or not (probe in shapes or DENOISER_PREFIX + probe in shapes):
            return None
        if int(img_in[1]) != 64:
            return (f"is a Flux.1 transformer of {img_in[1]} input channels (Fill, Depth): not as a single "
                    "file yet; use its diffusers folder")
        others = PART_PREFIXES["vae"] + PART_PREFIXES["text_encoder"] + PART_PREFIXES["text_encoder_2"]
        if not any(k.startswith(others) for k in shapes):
            return ("holds a Flux.1 transformer alone (BFL/ComfyUI models/unet layout): read it with "
                    "diffusion.load_transformer, the text encoders with diffusion.load_text_encoders and "
                    "ae.safetensors with diffusion.load_vae (family: flux)")
        return f"is a Flux.1 checkpoint {img_in[0]} wide, of no shipped config (FLUX.1-dev/schnell: 3072)"

    def recognise_folder(self, index: Mapping[str, Any]) -> bool:
        return str(index.get("_class_name", "")).startswith("Flux")

    def lora_state_dict(self, source: Any, denoiser: Any = None) -> tuple[dict[str, Any], Any, Any]:
        """diffusers, Kohya and BFL/ComfyUI layouts (flux_lora.py: what FluxPipeline's reader misses)."""
        from nodegraph_diffusion.flux_lora import flux_lora_state_dict

        return flux_lora_state_dict(source, denoiser)

    def load_lora_into_denoiser(self, state: dict[str, Any], alphas: Any, model: Any, adapter_name: str,
                                metadata: Any) -> None:
        from nodegraph_diffusion.flux_lora import load_into_transformer

        load_into_transformer(state, alphas, model, adapter_name, metadata)

    def recognise_denoiser_keys(self, keys: Collection[str]) -> bool:
        """BFL/ComfyUI layout (`double_blocks.*`, `single_blocks.*`) or diffusers' (`single_transformer_
        blocks.*`, which no other family's transformer has)."""
        from nodegraph_diffusion.flux_bfl import is_bfl

        return is_bfl(keys) or any(k.startswith("single_transformer_blocks.") for k in keys)

    def denoiser_state(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        from nodegraph_diffusion.flux_bfl import bfl_to_diffusers, is_bfl

        return bfl_to_diffusers(state, config) if is_bfl(state) else state

    def recognise_config(self, config: Mapping[str, Any]) -> bool:
        """Flux transformers and ControlNets (FluxControlNetModel: InstantX, XLabs, Union-Pro) have
        single-stream blocks and RoPE axes in their config; the other families' models have neither."""
        return "num_single_layers" in config and "axes_dims_rope" in config

    def conditioning_width(self, root: Path, index: Mapping[str, Any]) -> int | None:
        """T5's width (its `d_model`): the states the transformer's `joint_attention_dim` reads."""
        import json

        config = root / "text_encoder_2" / "config.json"
        if not config.is_file():
            return None
        return int(json.loads(config.read_text()).get("d_model", 0)) or None

    def concat_channels(self, in_channels: int) -> int | None:
        """Packed 2x2: FLUX.1-Fill's 384 inputs are 4 x (16 latent + 80 extra) channels; plain ones 0."""
        return in_channels // 4 - self.latent_channels

    def check_scheduler(self, class_name: str) -> str | None:
        if class_name in FLOW_SCHEDULERS:
            return None
        return (f"{self.label} models are flow-matching models: sample them with the model's own scheduler "
                f"(name: default) or another flow-matching one, not {class_name}")

    def encode(self, ctx: Any, handle: Any, request: PromptRequest) -> Any:
        import torch

        from nodegraph.api import InputError
        from nodegraph_diffusion.loading import use_text_encoder
        from nodegraph_diffusion.types import Conditioning

        if request.clip_skip:
            raise InputError(f"{self.label} uses CLIP's pooled output only: clip_skip does not apply; leave "
                             "it at 0", field="clip_skip")
        if getattr(request, "text_3", None) is not None:
            raise InputError(f"{self.label} has two text encoders (CLIP-L, T5): give T5's own prompt as "
                             "text_2; text_3 is SD3's", field="text_3")
        text_2 = request.text if request.text_2 is None else request.text_2
        with torch.no_grad():  # as the pipeline (autograd on picks other CPU kernels: 1 ulp off)
            with use_text_encoder(ctx, handle, "text_encoder", "tokenizer") as (tokenizer, clip):
                ids = tokenizer(request.text, padding="max_length", max_length=tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
                device = next(clip.parameters()).device
                pooled = clip(ids.to(device), output_hidden_states=False).pooler_output.to(dtype=clip.dtype)
            with use_text_encoder(ctx, handle, "text_encoder_2", "tokenizer_2") as (tokenizer, t5):
                length = request.t5_length or T5_MAX_LENGTH
                t5_ids = tokenizer(text_2, padding="max_length", max_length=length, truncation=True,
                                   return_tensors="pt").input_ids
                device = next(t5.parameters()).device
                embeds = t5(t5_ids.to(device), output_hidden_states=False)[0].to(dtype=t5.dtype)
        return Conditioning(embeds=embeds.detach().cpu(), prompt=request.text,
                            token_ids=tuple(int(i) for i in t5_ids[0]), pooled=pooled.detach().cpu(),
                            family=self.name)

    def skipped_steps(self, steps: int, denoise: float) -> int:
        """FluxImg2ImgPipeline.get_timesteps: `int(max(steps - min(steps * strength, steps), 0))`."""
        return int(max(steps - min(steps * denoise, steps), 0))

    def set_timesteps(self, scheduler: Any, steps: int, device: Any, latent_shape: tuple[int, ...]) -> None:
        from nodegraph_diffusion.flux_sampling import set_flux_timesteps

        height, width = int(latent_shape[-2]), int(latent_shape[-1])
        set_flux_timesteps(scheduler, steps, (height // 2) * (width // 2), device)

    def added_cond_kwargs(self, unet: Any, positive: Any, negative: Any | None,
                          request: DenoiseRequest) -> dict[str, Any] | None:
        """What each transformer call reads besides the T5 states: the pooled CLIP output of each side,
        the guidance (dev) and the ids; `halves` when the batch is [negative, positive] (true CFG)."""
        import torch

        from nodegraph_diffusion.flux_sampling import image_ids
        from nodegraph_diffusion.sampling import batch_pooled

        self.require_whole_patches(request, 2)  # the pipeline resizes such sizes; we say so
        sides = [negative, positive] if request.do_cfg and negative is not None else [positive]
        if any(side.pooled is None for side in sides):
            raise ValueError(f"{self.label} conditioning lacks CLIP's pooled output (encoded by another "
                             "family's encoder?)")
        pooled = torch.cat([batch_pooled(side.pooled, request.batch) for side in sides])
        guidance = None
        if unet.config.guidance_embeds:
            given = dict(positive.micro).get("guidance")  # 0 is a value: only unset means the default
            value = DEFAULT_GUIDANCE if given is None else float(given)
            guidance = torch.full([1], value, device=request.device, dtype=torch.float32)
            guidance = guidance.expand(request.batch)
        scale = self.vae_scale
        ids = image_ids(request.height // scale, request.width // scale, request.device, request.dtype)
        return {"pooled": pooled.to(device=request.device, dtype=request.dtype), "guidance": guidance,
                "img_ids": ids, "halves": len(sides) == 2}

    def denoise(self, model: Any, latent_in: Any, t: Any, embeds: Any, extra: dict[str, Any]) -> Any:
        """Pack, call the transformer as FluxPipeline does (positive, then negative, unbatched), unpack."""
        import torch

        from nodegraph.api import InputError
        from nodegraph_diffusion.flux_fill import with_concat
        from nodegraph_diffusion.flux_kontext import REFERENCE_KWARG, with_reference
        from nodegraph_diffusion.flux_sampling import pack, unpack

        # a Fill model's masked picture and mask (flux_fill.py), checked against what the model reads
        latent_in = with_concat(latent_in, extra, self.concat_channels(int(model.config.in_channels)) or 0)
        reference = extra.pop(REFERENCE_KWARG, None)  # a Kontext reference picture (flux_kontext.py)
        cond = extra.pop("added_cond_kwargs")
        joint = extra.pop("joint_attention_kwargs", None) or {}
        extra.pop("cross_attention_kwargs", None)
        # Flux ControlNet residuals (nodegraph_control/flux_controlnet.py), given to both CFG calls
        control = {key: extra.pop(key) for key in CONTROLNET_KWARGS if key in extra}
        if extra:  # UNet residuals from a condition of no family (another family's is refused earlier)
            raise InputError(f"{self.label} transformers take no {', '.join(sorted(extra))} (UNet control "
                             "units such as SD1.x/SDXL ControlNets and T2I-Adapters do not fit them)",
                             field="conditions")
        _, _, height, width = latent_in.shape
        halves = bool(cond["halves"])
        n = latent_in.shape[0] // 2 if halves else latent_in.shape[0]
        latents = pack(latent_in[:n])  # both halves are the same latents (the loop's cat)
        tokens = latents.shape[1]
        latents, ids = with_reference(latents, cond["img_ids"], reference)  # its tokens appended
        text_ids = torch.zeros(embeds.shape[1], 3).to(device=latents.device, dtype=embeds.dtype)
        timestep = t.expand(n).to(latents.dtype) / 1000

        def call(part: slice, label: str) -> Any:
            with model.cache_context(label):
                out = model(hidden_states=latents, timestep=timestep, guidance=cond["guidance"],
                            pooled_projections=cond["pooled"][part].clone(),
                            encoder_hidden_states=embeds[part].clone(), txt_ids=text_ids,
                            img_ids=ids, joint_attention_kwargs=joint, return_dict=False, **control)[0]
            return out if out.shape[1] == tokens else out[:, :tokens]

        if not halves:
            return unpack(call(slice(0, n), "cond"), height, width)
        positive = call(slice(n, 2 * n), "cond")
        negative = call(slice(0, n), "uncond")
        return torch.cat([unpack(negative, height, width), unpack(positive, height, width)])
