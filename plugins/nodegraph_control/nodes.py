"""Nodes of the `control` pack: pose rendering, edge maps, ControlNet, T2I-Adapter and IP-Adapter units.

Loader nodes output handles (weights are read when a sampler activates the unit); unit nodes output
`Condition`s for `diffusion.sample`'s `conditions` list, which takes any number of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from nodegraph_core.types import Image
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.paths import resolve_model_ref
from nodegraph_diffusion.types import VaeHandle
from pydantic import Field

from nodegraph.api import InputError, InputFile, NodeContext, node
from nodegraph_control.ip_adapter_files import IPAdapterHandle, IPAdapterRef, describe_ip_adapter
from nodegraph_control.models import AdapterHandle, AdapterRef, ControlNetHandle, ControlNetRef, describe
from nodegraph_control.pose import DEFAULT_THRESHOLD, load_pose_file
from nodegraph_control.units import AdapterUnit, ControlNetUnit, IPAdapterUnit, IPImageEmbeds

# A catalogue module: only light imports above, so listing and validating graphs never import torch,
# numpy or OpenCV; the modules that do the work are imported inside the node bodies (docs/plugins.md).

log = logging.getLogger(__name__)


@node("control.render_pose", version="1.0.0")
def render_pose(
    ctx: NodeContext,
    keypoints: Annotated[
        InputFile,
        Field(
            description="OpenPose JSON (COCO-18 or BODY_25, pixel or normalised, "
            "one document or a list of frames), relative to the graph"
        ),
    ],
    width: Annotated[int, Field(ge=8, le=8192, description="Output width in pixels")] = 512,
    height: Annotated[int, Field(ge=8, le=8192, description="Output height in pixels")] = 512,
    frame: Annotated[
        int, Field(ge=0, description="Frame to take from a list of frames (ComfyUI POSE_KEYPOINT)")
    ] = 0,
    threshold: Annotated[
        float,
        Field(
            ge=0,
            le=1,
            description="Points with lower confidence are missing "
            "(default 0.05, OpenPose's render threshold)",
        ),
    ] = DEFAULT_THRESHOLD,
    body: Annotated[bool, Field(description="Draw the body (17 limbs, 18 joints)")] = True,
    hands: Annotated[bool, Field(description="Draw hands when the file has them")] = True,
    face: Annotated[bool, Field(description="Draw face points when the file has them")] = True,
    scale_geometry: Annotated[
        bool, Field(description="Thinner strokes below 256 px (reference sizes at 256 px and above)")
    ] = True,
) -> Image:
    """Render OpenPose keypoints as a ControlNet openpose image, the canvas fitted and centred on black."""
    import numpy as np
    import torch

    from nodegraph_control.pose_render import render_pose as draw_pose

    frame_data = load_pose_file(ctx.input_path(keypoints), frame=frame, threshold=threshold)
    for note in frame_data.notes:
        log.warning("%s: %s", keypoints, note)
    array = draw_pose(
        frame_data, width, height, body=body, hands=hands, face=face, scale_geometry=scale_geometry
    )
    pixels = torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()
    return Image(pixels)


@node("control.canny", version="1.0.0")
def canny(
    image: Annotated[Image, Field(description="Images to find edges in")],
    low: Annotated[int, Field(ge=0, le=255, description="Lower hysteresis threshold")] = 100,
    high: Annotated[int, Field(ge=0, le=255, description="Upper hysteresis threshold")] = 200,
) -> Image:
    """Canny edge map (OpenCV), white edges on black, for canny/edge ControlNets."""
    from nodegraph_control import edges

    if low > high:
        raise InputError(f"low threshold {low} is above high threshold {high}", field="low")
    return Image(edges.canny(image.pixels, low, high))


@node("control.soft_edge", version="1.0.0")
def soft_edge(
    image: Annotated[Image, Field(description="Images to find edges in")],
    blur: Annotated[float, Field(ge=0, le=20, description="Gaussian blur sigma before the gradient")] = 1.0,
) -> Image:
    """Soft edge map (Sobel gradient magnitude, normalised), a cheap stand-in for HED/PiDiNet."""
    from nodegraph_control import edges

    return Image(edges.soft_edges(image.pixels, blur))


@node("control.load_controlnet", version="1.0.0", facts=family_facts.control_facts)
def load_controlnet(
    ctx: NodeContext,
    path: Annotated[
        ControlNetRef,
        Field(
            description="builtin:NAME, a diffusers ControlNet folder, or a "
            ".safetensors file (diffusers or original layout)"
        ),
    ],
    config: Annotated[
        str | None,
        Field(
            description="Config folder or .json for a single file (default: beside "
            "the file, or SD1.5's for original-layout files)"
        ),
    ] = None,
) -> ControlNetHandle:
    """Name a ControlNet model; its weights are loaded when a sampler uses it."""
    where = resolve_model_ref(path, ctx, "controlnet")
    return ControlNetHandle(**describe(where, ctx, "controlnet", _config(ctx, config)))


@node("control.load_t2i_adapter", version="1.0.0", facts=family_facts.adapter_facts)
def load_t2i_adapter(
    ctx: NodeContext,
    path: Annotated[
        AdapterRef,
        Field(
            description="builtin:NAME, a diffusers T2I-Adapter folder, or a "
            ".safetensors file in diffusers layout with its config"
        ),
    ],
    config: Annotated[str | None, Field(description="Config folder or .json for a single file")] = None,
) -> AdapterHandle:
    """Name a T2I-Adapter model; its weights are loaded when a sampler uses it."""
    where = resolve_model_ref(path, ctx, "adapter")
    return AdapterHandle(**describe(where, ctx, "t2i_adapter", _config(ctx, config)))


def _config(ctx: NodeContext, config: str | None) -> Path | None:
    if config is None:
        return None
    folder = ctx.input_path(config)
    if not folder.exists():
        raise InputError(f"config '{folder}' does not exist", field="config")
    return folder


# Shakker-Labs FLUX.1-dev-ControlNet-Union-Pro's control modes (InstantX's Union numbers its own alike
# up to 4; pass a number for other unions)
UNION_MODES = {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5, "lq": 6}


# 1.1: vae (transformer ControlNets read the control image encoded) and control_mode (union ControlNets)
@node("control.controlnet", version="1.1.0", facts=family_facts.unit_facts)
def controlnet(
    model: Annotated[ControlNetHandle, Field(description="The ControlNet (control.load_controlnet)")],
    image: Annotated[
        Image, Field(description="Control image (pose render, edge map, ...); resized to the generation size")
    ],
    strength: Annotated[float, Field(ge=0, le=2, description="Conditioning scale")] = 1.0,
    start: Annotated[
        float, Field(ge=0, le=1, description="Fraction of the steps at which it starts acting")
    ] = 0.0,
    end: Annotated[
        float, Field(ge=0, le=1, description="Fraction of the steps at which it stops acting")
    ] = 1.0,
    guess_mode: Annotated[
        bool,
        Field(
            description="Control the conditional branch only (works without a "
            "prompt; residuals weighted 0.1 -> 1 by depth)"
        ),
    ] = False,
    vae: Annotated[VaeHandle | None, Field(
        description="The model's VAE (@model.vae), for ControlNets that read the control image "
                    "VAE-encoded: Flux InstantX-style and Union nets, every SD3 ControlNet")] = None,
    control_mode: Annotated[str | int | None, Field(
        description="A union ControlNet's control mode: canny, tile, depth, blur, pose, gray, lq "
                    "(Union-Pro's numbering, 0-6) or a number")] = None,
) -> ControlNetUnit:
    """A ControlNet unit for the sampler's `conditions`; units are summed in list order."""
    if start >= end:
        raise InputError(f"start {start} must be below end {end}", field="start")
    if guess_mode and model.model_class != "ControlNetModel":
        raise InputError(f"guess mode is a UNet ControlNet's; '{model.path}' is a {model.model_class}",
                         field="guess_mode")
    if model.latent_image and vae is None:
        raise InputError(f"'{model.path}' ({model.model_class}) reads the control image VAE-encoded: "
                         "connect the model's VAE (vae: \"@model.vae\")", field="vae")
    return ControlNetUnit(model, image, float(strength), float(start), float(end), bool(guess_mode), vae,
                          _mode(model, control_mode))


def _mode(model: ControlNetHandle, given: str | int | None) -> int | None:
    """The control mode number of a union ControlNet (None for the others)."""
    if model.modes is None:
        if given is not None:
            raise InputError(f"'{model.path}' is not a union ControlNet (its config has no num_mode): leave "
                             "control_mode unset", field="control_mode")
        return None
    if given is None:
        raise InputError(f"'{model.path}' is a union ControlNet of {model.modes} modes: set control_mode "
                         f"({', '.join(UNION_MODES)} or a number)", field="control_mode")
    number = UNION_MODES.get(given.lower()) if isinstance(given, str) else given
    if isinstance(given, str) and number is None and given.isdigit():
        number = int(given)
    if number is None or not 0 <= number < model.modes:
        raise InputError(f"control_mode {given!r} is not one of {', '.join(UNION_MODES)} or a number below "
                         f"{model.modes}", field="control_mode")
    return number


@node("control.t2i_adapter", version="1.0.0", facts=family_facts.unit_facts)
def t2i_adapter(
    model: Annotated[AdapterHandle, Field(description="The T2I-Adapter (control.load_t2i_adapter)")],
    image: Annotated[Image, Field(description="Control image for the adapter")],
    weight: Annotated[float, Field(ge=0, le=2, description="Adapter conditioning scale")] = 1.0,
    end: Annotated[
        float,
        Field(
            ge=0,
            le=1,
            description="Fraction of the steps it acts on, from the start (adapter_conditioning_factor)",
        ),
    ] = 1.0,
) -> AdapterUnit:
    """A T2I-Adapter unit for the sampler's `conditions`; combines with ControlNet units."""
    return AdapterUnit(model, image, float(weight), float(end))


@node("control.load_ip_adapter", version="1.0.0", facts=family_facts.ip_adapter_facts)
def load_ip_adapter(
    ctx: NodeContext,
    path: Annotated[
        IPAdapterRef,
        Field(
            description="builtin:NAME, an IP-Adapter .safetensors (image_proj.* + ip_adapter.* keys; "
            ".bin only with --allow-pickle), or a folder holding one"
        ),
    ],
    image_encoder: Annotated[
        str | None,
        Field(
            description="CLIPVisionModelWithProjection folder (default: image_encoder/ beside the "
            "adapter file or one level up)"
        ),
    ] = None,
) -> IPAdapterHandle:
    """Name an IP-Adapter and its CLIP image encoder; weights are loaded when used."""
    where = resolve_model_ref(path, ctx, "adapter")
    encoder = ctx.input_path(image_encoder) if image_encoder is not None else None
    return describe_ip_adapter(where, encoder, ctx)


@node("control.encode_ip_image", version="1.0.0")
def encode_ip_image(
    ctx: NodeContext,
    model: Annotated[IPAdapterHandle, Field(description="The IP-Adapter (control.load_ip_adapter)")],
    image: Annotated[
        Image, Field(description="Reference image(s); a batch gives several images to one adapter")
    ],
) -> IPImageEmbeds:
    """Encode reference images with the IP-Adapter's CLIP image encoder (cached apart from the scale)."""
    from nodegraph_control.ip_adapter import encode_reference

    return encode_reference(model, image, ctx, ctx.device, ctx.dtype)


@node("control.ip_adapter", version="1.0.0", facts=family_facts.unit_facts)
def ip_adapter(
    model: Annotated[IPAdapterHandle, Field(description="The IP-Adapter (control.load_ip_adapter)")],
    embeds: Annotated[IPImageEmbeds, Field(description="Encoded reference image (control.encode_ip_image)")],
    scale: Annotated[float, Field(ge=-1, le=2, description="Image prompt strength (0 = off)")] = 1.0,
    block_scales: Annotated[
        dict[str, float | list[float] | dict[str, float | list[float]]] | None,
        Field(
            description="Per-block scales as diffusers' set_ip_adapter_scale takes them, e.g. "
            "{up: {block_0: [0.0, 1.0, 0.0]}} (style only); blocks not named get 0; replaces `scale`"
        ),
    ] = None,
) -> IPAdapterUnit:
    """An IP-Adapter (image prompt) unit for the sampler's `conditions`; combines with the other units."""
    if embeds.encoder_fingerprint != model.encoder_fingerprint or embeds.hidden_states != model.hidden_states:
        raise InputError(
            f"these embeddings were not made by the image encoder of '{model.path}': encode the reference "
            "image with control.encode_ip_image on this adapter",
            field="embeds",
        )
    return IPAdapterUnit(model, embeds, float(scale), block_scales)
