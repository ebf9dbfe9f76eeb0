"""IP-Adapter (image prompt) units: a `Condition` that installs diffusers' IP-Adapter for one sampler run.

Nothing here re-implements the adapter; it drives diffusers' own machinery the way the Stable
Diffusion pipelines do, so a sampler run equals `pipe.load_ip_adapter(...)` + `set_ip_adapter_scale`
+ `ip_adapter_image=` bit for bit (CPU fp32):
- encoding: the pipeline's `encode_image` (CLIPImageProcessor, `image_embeds`, zeros as the negative;
  penultimate hidden states for Plus/Full adapters) runs in `encode_reference`, once per image — a
  node of its own, so changing a scale never re-encodes;
- installing: `UNet2DConditionModel._load_ip_adapter_weights` builds `IPAdapterAttnProcessor2_0` for the
  cross-attention layers and the `encoder_hid_proj` image projection; `IPAdapterMixin.set_ip_adapter_scale`
  sets the scale (a float, or a per-block dict like `{"up": {"block_0": [0.0, 1.0, 0.0]}}`, blocks
  not named get 0, as in diffusers);
- each step: `added_cond_kwargs={"image_embeds": [...]}`, CFG-batched by the pipeline's
  `prepare_ip_adapter_image_embeds`.

Scoping (the residency manager shares one UNet between nodes and graphs): `IPInstallation.restore()`
puts back the exact processor objects, `encoder_hid_proj` and `config.encoder_hid_dim_type` the UNet had,
when the sampler closes the unit — also when sampling fails, and inside `activate` if installing fails.
Composition: ControlNets and T2I-Adapters add residuals (they see the plain text embeddings, as in the
ControlNet pipeline); LoRA lives in the linear layers the IP processors call. Attention hooks
(`nodegraph_attention`) are wrappers exposing `.inner`: the IP processor goes *beneath* any wrapper
already installed and hooks installed later wrap it, so conditions may come in any order and be
closed in any order. One IP-Adapter unit per sampler (diffusers' multi-adapter lists are not exposed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch
from nodegraph_core.types import Image
from nodegraph_diffusion.conditions import SamplingSetup, StepInput

from nodegraph.api import InputError, NodeContext
from nodegraph_control.edges import to_uint8_rgb
from nodegraph_control.ip_adapter_files import (
    IPAdapterHandle,
    feature_extractor,
    use_adapter_state,
    use_image_encoder,
)
from nodegraph_control.units import BlockScales, IPAdapterUnit, IPImageEmbeds  # port types, kept importable

EMPTY_FP32_WARNING = "should be kept in float32: []"


class _DropEmptyFp32Warning(logging.Filter):
    """diffusers' `ModelMixin.to(dtype=...)` warns about keeping an *empty* list of modules in fp32."""

    def filter(self, record: logging.LogRecord) -> bool:
        return EMPTY_FP32_WARNING not in record.getMessage()


@contextmanager
def _quiet_loader() -> Iterator[None]:
    """Silence that meaningless warning of `_load_ip_adapter_weights` (printed on every sampler run)."""
    target = logging.getLogger("diffusers.models.modeling_utils")
    quiet = _DropEmptyFp32Warning()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


def _pil_images(image: Image) -> list[Any]:
    from PIL import Image as PILImage

    return [PILImage.fromarray(a) for a in to_uint8_rgb(image.pixels)]


def encode_reference(
    handle: IPAdapterHandle,
    image: Image,
    ctx: NodeContext | None,
    device: Any = "cpu",
    dtype: Any = torch.float32,
) -> IPImageEmbeds:
    """Encode the reference images (a batch = several images for one adapter) like the pipeline does."""
    from diffusers import StableDiffusionPipeline

    with use_image_encoder(ctx, handle, torch.device(device), dtype) as encoder, torch.no_grad():
        pipe = SimpleNamespace(image_encoder=encoder, feature_extractor=feature_extractor(handle, encoder))
        # the pipeline's own method, run on just the two parts it reads
        embeds, negative = StableDiffusionPipeline.encode_image(
            pipe, _pil_images(image), device, 1, handle.hidden_states
        )
    as_cpu = dict(device="cpu", dtype=torch.float32)
    return IPImageEmbeds(
        embeds[None].to(**as_cpu),
        negative[None].to(**as_cpu),
        handle.encoder_fingerprint,
        handle.hidden_states,
    )


def _ip_processor_classes() -> tuple[type, ...]:
    from diffusers.models.attention_processor import (
        IPAdapterAttnProcessor,
        IPAdapterAttnProcessor2_0,
        IPAdapterXFormersAttnProcessor,
    )

    return IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0, IPAdapterXFormersAttnProcessor


def _innermost(processor: Any) -> Any:
    """The processor at the bottom of a chain of wrappers (objects exposing `.inner`)."""
    while hasattr(processor, "inner"):
        processor = processor.inner
    return processor


def _put_under(top: Any, bottom: Any) -> Any:
    """`top`'s wrapper chain with its innermost processor replaced by `bottom` (or `bottom` if unwrapped)."""
    if not hasattr(top, "inner"):
        return bottom
    node = top
    while hasattr(node.inner, "inner"):
        node = node.inner
    node.inner = bottom
    return top


def _swap_in_chain(top: Any, old: Any, new: Any) -> Any:
    """`top`'s chain with the processor `old` replaced by `new`, wherever it sits."""
    if top is old:
        return new
    node = top
    while hasattr(node, "inner"):
        if node.inner is old:
            node.inner = new
            return top
        node = node.inner
    return top  # someone replaced the chain wholesale; leave their choice alone


class IPInstallation:
    """IP-Adapter layers installed on one UNet; `restore()` undoes exactly them (idempotent, never raises)."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet
        self.saved_proj = unet.encoder_hid_proj
        self.saved_type = unet.config.encoder_hid_dim_type
        self.bases: dict[str, Any] = {}
        self.installed: dict[str, Any] = {}
        self.active = True

    def restore(self) -> None:
        if not self.active:
            return
        self.active = False
        current = dict(self.unet.attn_processors)
        for name, mine in self.installed.items():
            current[name] = _swap_in_chain(current[name], mine, self.bases[name])
        self.unet.set_attn_processor(current)
        self.unet.encoder_hid_proj = self.saved_proj
        self.unet.config.encoder_hid_dim_type = self.saved_type
        self.installed = {}


def install_ip_adapter(
    unet: Any, state: dict[str, Any], scale: float | BlockScales, path: str
) -> IPInstallation:
    """Install an IP-Adapter on `unet` with diffusers' loader and scale setter; return its installation."""
    from diffusers.loaders.ip_adapter import IPAdapterMixin

    if unet.encoder_hid_proj is not None:
        raise InputError(
            "the UNet already has an image projection (a second ip_adapter unit in this sampler?); "
            "one IP-Adapter unit per sampler is supported",
            field="conditions",
        )
    installation = IPInstallation(unet)
    before = dict(unet.attn_processors)
    installation.bases = {name: _innermost(p) for name, p in before.items()}
    try:
        unet.set_attn_processor(dict(installation.bases))  # the loader reads plain processors' classes
        try:
            with _quiet_loader():
                unet._load_ip_adapter_weights([state])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise InputError(
                f"IP-Adapter '{path}' does not fit this UNet: {exc}", field="conditions"
            ) from exc
        ours = _ip_processor_classes()
        installation.installed = {n: p for n, p in unet.attn_processors.items() if isinstance(p, ours)}
        try:
            IPAdapterMixin.set_ip_adapter_scale(SimpleNamespace(unet=unet), scale)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"the ip_adapter unit's block_scales {scale!r} do not fit this UNet: {exc}",
                field="conditions",
            ) from exc
        # wrappers that were there (attention hooks) go back on top, the IP processors beneath them;
        # a Plus projection (a Resampler) brings attention layers of its own: they stay as loaded
        unet.set_attn_processor(
            {
                name: _put_under(before[name], installation.installed.get(name, installation.bases[name]))
                if name in before
                else processor
                for name, processor in unet.attn_processors.items()
            }
        )
    except BaseException:
        installation.restore()
        # exactly the chains we found, each ending in its own processor again
        unet.set_attn_processor({n: _put_under(top, installation.bases[n]) for n, top in before.items()})
        raise
    return installation


class ActiveIPAdapter:
    """The adapter installed on the sampler's UNet, the image embeddings batched for this run."""

    def __init__(self, unit: IPAdapterUnit, setup: SamplingSetup, ctx: NodeContext | None) -> None:
        from diffusers import StableDiffusionPipeline

        self.installation: IPInstallation | None = None
        with use_adapter_state(ctx, unit.model) as state:
            scale = unit.block_scales if unit.block_scales is not None else float(unit.scale)
            self.installation = install_ip_adapter(setup.unet, state, scale, unit.model.path)
        try:
            embeds = unit.embeds.embeds.to(device=setup.device, dtype=setup.dtype)
            if setup.do_cfg:
                negative = unit.embeds.negative.to(device=setup.device, dtype=setup.dtype)
                embeds = torch.cat([negative, embeds])
            # the pipeline's batching (images per prompt, [negative, positive] for CFG), on precomputed embeds
            self.image_embeds = StableDiffusionPipeline.prepare_ip_adapter_image_embeds(
                None, None, [embeds], setup.device, setup.batch_size, setup.do_cfg
            )
        except BaseException:
            self.installation.restore()
            raise

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        return {"added_cond_kwargs": {"image_embeds": self.image_embeds}}

    def close(self) -> None:
        if self.installation is not None:
            self.installation.restore()
