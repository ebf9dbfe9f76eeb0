"""Port types of the diffusion pack.

Models flow as light, hashable descriptors (handles), never as modules: the residency manager
materialises a handle on a device only while a consuming node runs. Tensors flow as values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a diffusers folder or a single-file checkpoint."""

    path: str  # absolute path of the folder or file
    fingerprint: str  # content fingerprint; the residency key
    format: str  # "diffusers" | "single_file" | "component_files" | "single_file_vae" | "transformer_file"
    base: str = "sd15"  # shipped config name (configs/NAME) for single files
    config_dir: str | None = None  # local diffusers config folder used for single files
    tokenizer_dir: str | None = None  # tokenizer folder when the config folder has none (real SD1.5 files)
    family: str = "sd1"  # the ModelFamily (families/) that reads, encodes and denoises with these weights
    # a standalone VAE file several families read alike (SD1.x's and SDXL's VAEs): family "" and the
    # (family, config) choices, decided where it is used (vae_files.in_context)
    vae_choices: tuple[tuple[str, str], ...] = ()
    # a denoiser-only file (format "transformer_file", transformer_files.py): how its weights are stored
    # ("" as the run's dtype; "float8_e4m3fn"/"float8_e5m2": fp8, upcast layer by layer; "gguf":
    # quantized) and the dtype they compute in ("auto": the run's)
    storage: str = ""
    compute_dtype: str = "auto"
    # the components a single file holds, or the separate files of diffusion.load_text_encoders, as
    # (component, file) pairs; () = every component from `path` (SD1.x/SDXL single files)
    parts: tuple[tuple[str, str], ...] = ()
    t5_tokenizer_dir: str | None = None  # T5's tokenizer folder (not shippable: single files need one)


@dataclass(frozen=True)
class LoraPatch:
    """One LoRA applied to a model, with its own weights for the UNet and the text encoder."""

    path: str
    fingerprint: str
    name: str  # adapter name, unique per file
    unet_weight: float = 1.0
    text_encoder_weight: float = 1.0


@dataclass(frozen=True)
class EmbeddingPatch:
    """A textual-inversion embedding added to a text encoder: the prompt word `token` stands for its
    vectors (A1111 `.safetensors`/`.pt`, diffusers `learned_embeds`)."""

    path: str
    fingerprint: str
    token: str


@dataclass(frozen=True)
class UNetHandle:
    # model handles: the engine's scheduler groups nodes reading the same one (fewer model swaps)
    __nodegraph_resident__ = True
    source: ModelSource
    loras: tuple[LoraPatch, ...] = ()


@dataclass(frozen=True)
class TextEncoderHandle:
    """The CLIP text encoder and its tokenizer (with LoRAs and textual-inversion embeddings)."""

    __nodegraph_resident__ = True
    source: ModelSource
    loras: tuple[LoraPatch, ...] = ()
    embeddings: tuple[EmbeddingPatch, ...] = ()


@dataclass(frozen=True)
class VaeHandle:
    __nodegraph_resident__ = True
    source: ModelSource


@dataclass(frozen=True)
class SchedulerSpec:
    """A scheduler by name, with options, over the model's own scheduler config."""

    name: str
    base_config: tuple[tuple[str, Any], ...]  # the model's scheduler_config.json, as sorted items
    options: tuple[tuple[str, Any], ...] = ()  # e.g. (("use_karras_sigmas", True),)


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Text conditioning for cross-attention: embeddings (B, tokens, dim).

    `prompt` and `token_ids` are kept so attention hooks can find words. `empty` is the same encoder's
    encoding of the empty prompt (1, 77, dim): the sampler pads a shorter conditioning with it to a
    longer one (A1111's `pad_cond_uncond`); kept where padding may need it (empty and long prompts).
    """

    embeds: Any  # torch.Tensor
    prompt: str = ""
    token_ids: tuple[int, ...] = ()
    pooled: Any = None  # SDXL pooled embeds, when the encoder gives them
    empty: Any = None  # torch.Tensor (1, 77, dim) or None
    family: str = "sd1"  # the ModelFamily of the encoder; the sampler asks it for the UNet's extra inputs
    # family-specific conditioning the family turns into denoiser inputs at sampling time, as sorted
    # (name, value) items: SDXL's micro-conditioning sizes (0 = the sampled image's size)
    micro: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class SeedDraws:
    """Random draws a VAE-encode node already took from the generator of `seed`, by tensor shape.

    diffusers' img2img and inpaint pipelines use one generator for everything: the latent-distribution
    sample of the encoded image first, then the noise, then (inpaint) the masked image's sample, then
    the scheduler's own draws. A sampler seeded with the same `seed` replays these shapes around its
    noise draw, so the graph equals the pipeline from the same pixels, and its noise is not the very
    draw the encoder used (which would correlate the noise with the image's latent sample).
    """

    seed: int
    before_noise: tuple[tuple[int, ...], ...] = ()
    after_noise: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True, eq=False)
class Latents:
    """Latent images (B, C, h, w), CPU float32, already scaled by the VAE's scaling factor.

    `noise_mask` (B, 1, h, w), 1 = repaint, travels with latents for inpainting. `drawn`: the draws
    the encoder took from its seed (set by diffusion.vae_encode*, read by diffusion.sample; None else).
    `family`: whose latent space (scaling factor) they are in.
    """

    samples: Any  # torch.Tensor
    noise_mask: Any = None
    # side results of the run that made these latents (e.g. "attention_maps"), cached with them;
    # filled by the sampler from its conditions' optional `results()` (see conditions.py)
    extras: dict[str, Any] = field(default_factory=dict)
    drawn: SeedDraws | None = None
    # the model family whose latent space these are (None: not known, e.g. empty latents): set by
    # samplers and VAE encoders, so a VAE file of open family decodes them with the right config
    family: str | None = None


@dataclass(frozen=True, eq=False)
class Noise:
    """Initial noise (B, C, h, w) drawn from a seeded generator (CPU by default)."""

    samples: Any
    seed: int = 0


@dataclass(frozen=True)
class ModelParts:
    """What a checkpoint loader produces (as a NamedTuple of outputs in the node; kept here for reuse)."""

    unet: UNetHandle
    text_encoder: TextEncoderHandle
    vae: VaeHandle
    scheduler: SchedulerSpec
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KSamplerSpec:
    """A sigma-space sampler as ComfyUI's KSampler runs it: a k-diffusion sampler function by its
    ComfyUI name, a ComfyUI sigma schedule, over the model's scheduler config (its beta schedule).

    `diffusion.sample` runs its sigma-space loop (k_sampling.py) when given one of these instead of a
    `SchedulerSpec` (diffusers' schedulers)."""

    sampler: str  # ComfyUI sampler_name: euler, euler_ancestral, heun, dpm_2, lms, dpmpp_2m, ...
    scheduler: str  # ComfyUI scheduler: normal, karras, exponential, sgm_uniform, simple, ddim_uniform, beta
    base_config: tuple[tuple[str, Any], ...]  # the model's scheduler_config.json, as sorted items


@dataclass(frozen=True)
class Area:
    """Where a conditioning entry acts, in latent cells (pixels // 8), or in fractions of the image
    size when `percentage` (ComfyUI's ConditioningSetArea / ConditioningSetAreaPercentage)."""

    height: float
    width: float
    y: float = 0
    x: float = 0
    percentage: bool = False


@dataclass(frozen=True, eq=False)
class RegionEntry:
    """One entry of a regional conditioning: a prompt encoding, where it acts and how strongly."""

    cond: Conditioning
    area: Area | None = None
    strength: float = 1.0


@dataclass(frozen=True, eq=False)
class RegionalConditioning:
    """A list of conditioning entries evaluated each on its area and averaged by weight, as ComfyUI's
    CONDITIONING lists are (ConditioningCombine, ConditioningSetArea); sampled by the k-sampler path."""

    entries: tuple[RegionEntry, ...]


def region_entries(value: Conditioning | RegionalConditioning) -> tuple[RegionEntry, ...]:
    """The entries of either kind of conditioning (a plain one is a single full-image entry)."""
    if isinstance(value, RegionalConditioning):
        return value.entries
    return (RegionEntry(value),)
