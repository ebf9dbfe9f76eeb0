"""What a model family is: the one place that says how a kind of checkpoint is read and driven.

A family answers every question whose answer differs between, say, SD1.x and SDXL: how its
checkpoints are recognised (a diffusers folder's `model_index.json`, a single file's key names), which
text-encoder components it has, how a prompt becomes conditioning, which extra inputs its denoiser
takes besides the latents, the timestep and the cross-attention states, and its latent layout. The
nodes (`diffusion.load_model`, `encode_text`, `sample`, `vae_decode`) only ask the family named by the
handles they get, so a new family needs no edit to them, nor to the engine (see `families/__init__`).

This module is light (stdlib only): families are found and asked to recognise files at validation
time too; torch and diffusers are imported inside the methods that run models.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INPAINT_CHANNELS = 9  # the SD inpainting UNets: latents, mask, masked picture (the sampler's masked_image)

@dataclass(frozen=True)
class PromptRequest:
    """What `diffusion.encode_text` asks a family to encode (the node's inputs, family-neutral)."""

    text: str
    text_2: str | None = None  # a second encoder's own prompt (SDXL, SD3's CLIP-G); None = the same text
    clip_skip: int = 0  # final layers skipped beyond the family's default layer
    emphasis: bool = True
    # micro-conditioning sizes and scores, by name (SDXL: original/crop/target sizes; 0 = image size)
    micro: tuple[tuple[str, Any], ...] = ()
    text_3: str | None = None  # a third encoder's own prompt (SD3's T5); None = the same text
    t5_length: int | None = None  # T5's token count (the pipelines' max_sequence_length); None = the family's


@dataclass(frozen=True)
class DenoiseRequest:
    """What the sampler tells a family before the loop, to build the denoiser's extra inputs."""

    batch: int  # latent batch size
    do_cfg: bool  # inputs are batched [negative, positive]
    height: int  # image size in pixels (latent size times the VAE scale)
    width: int
    device: Any
    dtype: Any


class ModelFamily:
    """Base class of model families; a family overrides what differs from SD1.x's answers.

    Subclasses set `name` (the id handles carry), `label` (for messages) and override the methods.
    Instances are stateless: one per process is fine, none is mutated.
    """

    name: str = ""
    label: str = ""
    latent_channels: int = 4
    vae_scale: int = 8  # pixels per latent cell
    text_encoders: tuple[str, ...] = ("text_encoder",)  # components of a diffusers folder
    tokenizers: tuple[str, ...] = ("tokenizer",)
    config_names: tuple[str, ...] = ()  # shipped configs/NAME folders for this family's single files
    supports_lora: bool = True  # diffusion.load_lora reads LoRA files for this family's models
    # LoRA files: the diffusers pipeline whose `lora_state_dict` / `load_lora_into_*` read them, the
    # components they patch (a diffusers/peft file's key prefixes are these names), whether Kohya files
    # name UNet blocks the original (SGM) way (`input_blocks_4_1_...`, remapped with the UNet's config)
    # and the UNets' cross-attention widths (a LoRA's attn2 `to_k` input width must be one of them)
    lora_pipeline: str = "StableDiffusionPipeline"
    lora_components: tuple[str, ...] = ("unet", "text_encoder")
    lora_sgm_names: bool = False
    cross_attention_widths: tuple[int, ...] = ()
    lora_markers: tuple[str, ...] = ()  # layer names in LoRA keys no other family's models have
    # standalone VAE files: the encoder's first width -> the shipped config folder (configs/NAME) that
    # reads them with this family's scaling factor. SD1.x's and SDXL's VAEs share their architecture
    # (both 128), so a width claimed by two families is decided by the context (see vae_files.py)
    vae_configs: tuple[tuple[int, str], ...] = ()
    # the denoiser: its folder in a diffusers model and the diffusers class that reads it (UNets for the
    # SD families; a transformer for the flow-matching ones: SD3Transformer2DModel, FluxTransformer2DModel)
    denoiser_component: str = "unet"
    denoiser_class: str = "UNet2DConditionModel"
    # T5's default token count (the pipeline's `max_sequence_length`) for families with a T5 encoder;
    # None: no T5, and diffusion.encode_text refuses a t5_max_length
    t5_max_length: int | None = None
    # (tokenizer, text encoder) components of the family's T5 encoder, if it has one: T5's tokenizer
    # cannot be shipped, so single files and separate encoder files need the user's folder for it
    t5_components: tuple[str, str] | None = None
    # diffusion.load_text_encoders: (node field, component, required) of each separate encoder file, and
    # the shipped config whose text-encoder configs read them; () = no separate encoder files
    encoder_files: tuple[tuple[str, str, bool], ...] = ()
    encoder_config: str = ""
    # whether `denoise` takes `extra["skip_layers"]` (block indices to skip: skip-layer guidance)
    skip_layers: bool = False
    # the conditions that feed a wide denoiser, by the channels they add (messages name the node)
    concat_conditions: tuple[tuple[int, str], ...] = (
        (4, "an InstructPix2Pix UNet (timbrooks/instruct-pix2pix): diffusion.instruct_pix2pix's condition"),
        (3, "the x4 upscaler's UNet (stabilityai/stable-diffusion-x4-upscaler): diffusion.sd_upscale's "
            "condition"),
    )

    def lora_state_dict(self, source: Any, denoiser: Any = None) -> tuple[dict[str, Any], Any, Any]:
        """(state dict in diffusers naming, network alphas, metadata) of a LoRA `source` (a .safetensors
        path or a state dict), as the family's pipeline reads it in `load_lora_weights`. `denoiser` is
        the resident UNet/transformer (None when the text encoders read the file). SD families: the
        pipeline's `lora_state_dict`, with the UNet's config to map SGM block names (SDXL)."""
        import diffusers

        extra = {"unet_config": denoiser.config} if self.lora_sgm_names and denoiser is not None else {}
        reader = getattr(diffusers, self.lora_pipeline)
        return tuple(reader.lora_state_dict(source, return_lora_metadata=True, **extra))  # type: ignore

    def load_lora_into_denoiser(self, state: dict[str, Any], alphas: Any, model: Any, adapter_name: str,
                                metadata: Any) -> None:
        """Inject a LoRA read by `lora_state_dict` into the UNet/transformer as a named peft adapter, as
        the pipeline's `load_lora_weights` does (SD families: `load_lora_into_unet`)."""
        import diffusers

        getattr(diffusers, self.lora_pipeline).load_lora_into_unet(
            state, network_alphas=alphas, unet=model, adapter_name=adapter_name, metadata=metadata)

    def recognise_folder(self, index: Mapping[str, Any]) -> bool:
        """Whether a diffusers folder whose model_index.json is `index` is of this family."""
        return False

    def recognise_keys(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """The shipped config name for a single file with these tensor shapes, or None if not ours."""
        return None

    def file_problem(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Why a single file this family recognises no config for cannot load as a full model (e.g. a
        transformer-only file: another node reads it), as the end of a sentence starting with the
        file's name; None: not a file of this family."""
        return None

    def refines_only(self, index: Mapping[str, Any]) -> bool:
        """Whether a model with this model_index.json only refines an image (SDXL's refiner): a sampler
        with its UNet must not start from empty latents at full strength (validation says so)."""
        return False

    def conditioning_width(self, root: Path, index: Mapping[str, Any]) -> int | None:
        """Width of the conditioning the text encoders of the model at `root` give (validation compares
        it with the UNet's `cross_attention_dim`); None: not told. The default: their hidden sizes side
        by side (SD1.x: one; SDXL base: both encoders' penultimate states concatenated)."""
        total = 0
        for name, entry in index.items():
            config = root / name / "config.json"
            if name.startswith("text_encoder") and isinstance(entry, list) and entry[0] and config.is_file():
                total += int(json.loads(config.read_text()).get("hidden_size", 0))
        return total or None

    def single_file_prefixes(self, component: str) -> tuple[str, ...] | None:
        """Key prefixes of a single file that diffusers' converter needs for `component` (a folder
        name: unet, vae, text_encoder...), so only those are read; None: the whole file."""
        return None

    def recognise_denoiser_keys(self, keys: Collection[str]) -> bool:
        """Whether a denoiser-only file (flux1-dev.safetensors, a GGUF) with these tensor names (ComfyUI's
        `model.diffusion_model.` prefix dropped) holds this family's denoiser, in a layout
        `denoiser_state` reads (transformer_files.py)."""
        return False

    def denoiser_state(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """A denoiser-only file's tensors in diffusers' names, converted from the layout they were
        written in by diffusers' converter; `config` is the denoiser's config.json. Diffusers-named
        states come back as they are. Tensors may be on the meta device (a header's shapes only)."""
        return state

    def recognise_config(self, config: Mapping[str, Any]) -> bool:
        """Whether a control model's config.json (a ControlNet's, a T2I-Adapter's) is made for this family."""
        return False

    def recognise_cross_attention(self, width: int) -> bool:
        """Whether this family's UNets attend to context of `width` features: an IP-Adapter's key/value
        projections (`ip_adapter.*.to_k_ip.weight`) read that width, which tells the UNets it fits. By
        default the widths the family's LoRAs may fit (`cross_attention_widths`)."""
        return width in self.cross_attention_widths

    def encode(self, ctx: Any, handle: Any, request: PromptRequest) -> Any:
        """Encode a prompt with the handle's text encoder(s) into this family's `Conditioning`."""
        raise NotImplementedError(f"family {self.name!r} cannot encode prompts")

    def absent_negative(self, source: Any, positive: Any) -> Any | None:
        """The negative `Conditioning` to guide with when the sampler is given none (None: there is no
        such default, and the sampler asks for a negative). `source` is the UNet's ModelSource."""
        return None

    def added_cond_kwargs(self, unet: Any, positive: Any, negative: Any | None,
                          request: DenoiseRequest) -> dict[str, Any] | None:
        """The denoiser's family inputs for the whole loop, besides the text states (None: none).

        SD families: the UNet's `added_cond_kwargs` (SDXL: text_embeds, time_ids). A transformer family
        returns what its `denoise` reads (SD3: `pooled_projections`, batched [negative, positive] like
        the embeds); the loop hands the dict to `denoise` as `extra["added_cond_kwargs"]`."""
        return None

    # --- the denoising loop's hooks (sampling.run_loop calls these; it never asks which family) ---

    def set_timesteps(self, scheduler: Any, steps: int, device: Any, latent_shape: tuple[int, ...]) -> None:
        """Set the scheduler's timesteps for `steps` inference steps, as the family's pipeline does.

        `latent_shape` is the latents' (B, C, h, w) as the graph holds them (unpacked). SD families:
        `set_timesteps(steps, device=device)`. Flow-matching families pass what their pipeline passes to
        `retrieve_timesteps` (Flux: `sigmas=linspace(1, 1/steps, steps)` and `mu` from the image's token
        count when the scheduler config has `use_dynamic_shifting`)."""
        scheduler.set_timesteps(steps, device=device)

    def skipped_steps(self, steps: int, denoise: float) -> int:
        """How many of `steps` an img2img run with strength `denoise` skips, as the family's img2img
        pipeline counts them. SD families: `steps - int(steps * strength)`; the SD3/Flux img2img
        pipelines round after subtracting: `int(steps - steps * strength)` (4 steps at 0.6: 1, not 2)."""
        return steps - min(int(steps * denoise), steps)

    def denoise(self, model: Any, latent_in: Any, t: Any, embeds: Any, extra: dict[str, Any]) -> Any:
        """One denoiser call: the model's prediction for `latent_in` (already CFG-batched and scaled
        by the scheduler) at timestep `t`, given the text states `embeds`.

        `extra` holds the conditions' merged per-step kwargs (ControlNet residuals,
        `cross_attention_kwargs`) and the family's own inputs under `added_cond_kwargs`; the method may
        pop from it. The SD families call the UNet exactly as diffusers' pipelines do. A transformer
        family calls its transformer the way its pipeline does (SD3: `hidden_states`, `timestep=
        t.expand(batch)`, `encoder_hidden_states`, `pooled_projections`, `joint_attention_kwargs`);
        latent packing (Flux's 2x2 patches) belongs here too: pack `latent_in`, unpack the prediction,
        so the graph's `Latents`, the scheduler step and the VAE stay in the (B, C, h, w) layout."""
        from nodegraph_diffusion.channel_concat import with_concat

        # what an InstructPix2Pix or x4-upscaler condition appends (channel_concat.py); the 9-channel
        # inpainting UNets' mask and masked picture are already in `latent_in` (the sampler's masked_image)
        wanted = int(model.config.in_channels) - int(latent_in.shape[1])
        latent_in = with_concat(latent_in, extra, wanted, self.concat_missing(wanted),
                                self.concat_misfit)
        return model(
            latent_in,
            t,
            encoder_hidden_states=embeds,
            timestep_cond=None,
            cross_attention_kwargs=extra.pop("cross_attention_kwargs", None),
            added_cond_kwargs=extra.pop("added_cond_kwargs", None),
            return_dict=False,
            **extra,
        )[0]

    def require_whole_patches(self, request: DenoiseRequest, patch: int) -> None:
        """Refuse an image size the denoiser's `patch`x`patch` latent patches don't tile: the pipelines
        resize or refuse such sizes, and the transformer would fail deep inside with a shape error."""
        from nodegraph.api import InputError

        cells = (request.height // self.vae_scale, request.width // self.vae_scale)
        if cells[0] % patch or cells[1] % patch:
            raise InputError(f"{self.label} reads latents in {patch}x{patch} patches: the image must be a "
                             f"multiple of {patch * self.vae_scale} pixels on each side, not {request.width}x"
                             f"{request.height} (set diffusion.empty_latents' width/height, or resize the "
                             "image)", field="latents")

    def concat_channels(self, in_channels: int) -> int | None:
        """How many channels besides the latents a denoiser of `in_channels` inputs reads from a sampler
        condition (unpacked; a Fill model's masked picture and mask: flux_fill.py), or None: not read
        from conditions. SD families: an InstructPix2Pix UNet (8 inputs) reads 4 (instruct_pix2pix.py),
        the x4 upscaler's (7) 3 (sd_upscale.py), a plain UNet 0; the inpainting UNets (9) get theirs
        from the sampler's `masked_image`, not from a condition."""
        if in_channels == INPAINT_CHANNELS:
            return None
        return in_channels - self.latent_channels

    def concat_missing(self, wanted: int) -> str:
        """What to tell a user whose model reads `wanted` channels from a condition, given none."""
        needs = dict(self.concat_conditions).get(wanted)
        return (f"this model's denoiser reads {wanted} channels besides its latents"
                + (f" ({needs})" if needs else "") + ": give the sampler that condition in `conditions`")

    def concat_misfit(self, wanted: int, given: int) -> str:
        """Why a model reading `wanted` extra channels cannot take a condition giving `given`."""
        what = dict((n, w) for n, w in self.concat_conditions).get(given, "a channel-concat condition")
        reads = "reads only its latents" if wanted <= 0 else f"reads {wanted} channels besides its latents"
        return (f"'conditions' gives {given} extra input channels ({what}), but this model's denoiser "
                f"{reads}: load the model the condition is made for")

    def check_scheduler(self, class_name: str) -> str | None:
        """Why this family cannot sample with the diffusers scheduler class `class_name` (None: it can).
        The SD families take every scheduler; flow-matching models only flow-matching schedulers."""
        return None
