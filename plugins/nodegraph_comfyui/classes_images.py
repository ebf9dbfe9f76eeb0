"""ComfyUI's image, mask, inpainting, upscaling and SDXL-prompt classes as `ClassMapping`s.

The companion of `classes` (its `core_mappings` appends these): each function emits the nodegraph
nodes that follow the ComfyUI class's arithmetic (core.grow_mask, core.pad_for_outpaint,
core.composite_masked, core.scale, diffusion.vae_encode_for_inpaint, upscale.*), and returns what its
output slots carry, in ComfyUI's slot order.
"""

from __future__ import annotations

from typing import Any

from nodegraph_comfyui.convert import ClassMapping, Clip, Cond, Converter
from nodegraph_comfyui.widgets import WIDGETS
from nodegraph_comfyui.workflow import WfNode

SCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
MASK_CHANNELS = ("alpha", "red", "green", "blue")


def _vae_encode_inpaint(cv: Converter, n: WfNode) -> list[Any]:
    image, vae, mask = cv.input(n, "pixels"), cv.input(n, "vae"), cv.input(n, "mask")
    grow = cv.literal(n, "grow_mask_by", 6)
    name = cv.add(
        "encoded",
        "diffusion.vae_encode_for_inpaint",
        vae=vae,
        image=image,
        mask=mask,
        grow_mask_by=cv.param(
            "grow_mask_by", grow, "Pixels the inpaint mask grows by", minimum=0, maximum=64
        ),
    )
    return ["@" + name]


def _pad_for_outpaint(cv: Converter, n: WfNode) -> list[Any]:
    sides = {k: cv.literal(n, k, 0) for k in ("left", "top", "right", "bottom")}
    name = cv.add(
        "padded",
        "core.pad_for_outpaint",
        image=cv.input(n, "image"),
        **{
            k: cv.param(f"pad_{k}", v, f"Pixels added {k} (outpainting)", minimum=0) for k, v in sides.items()
        },
        feathering=cv.literal(n, "feathering", 40),
    )
    return [f"@{name}.image", f"@{name}.mask"]


def _grow_mask(cv: Converter, n: WfNode) -> list[Any]:
    name = cv.add(
        "grown",
        "core.grow_mask",
        mask=cv.input(n, "mask"),
        expand=cv.param("grow", cv.literal(n, "expand", 0), "Pixels the mask grows by (negative: shrinks)"),
        tapered_corners=bool(cv.literal(n, "tapered_corners", True)),
    )
    return ["@" + name]


def _load_image_mask(cv: Converter, n: WfNode) -> list[Any]:
    channel = cv.literal(n, "channel", "alpha")
    value = cv.literal(n, "image")
    if channel not in MASK_CHANNELS:
        cv.problem(n, f"channel '{channel}' is none of {', '.join(MASK_CHANNELS)}", "channel")
        return [None]
    path = cv.param(
        "mask_image",
        cv.input_file(value) if isinstance(value, str) else value,
        "Mask image (beside the workflow file, else in ComfyUI's input/ folder)",
        type="path",
    )
    loaded = "@" + cv.add("mask", "core.load_mask", path=path, channel=channel)
    if channel != "alpha":
        return [loaded]
    return ["@" + cv.add("mask", "core.invert_mask", mask=loaded)]  # ComfyUI: 1 - alpha


def _composite(cv: Converter, n: WfNode) -> list[Any]:
    mask = cv.input(n, "mask", None)
    name = cv.add(
        "composite",
        "core.composite_masked",
        destination=cv.input(n, "destination"),
        source=cv.input(n, "source"),
        x=cv.literal(n, "x", 0),
        y=cv.literal(n, "y", 0),
        resize_source=bool(cv.literal(n, "resize_source", False)),
        mask=mask,
    )
    return ["@" + name]


def _method(cv: Converter, n: WfNode) -> str | None:
    method = cv.literal(n, "upscale_method", "nearest-exact")
    if method not in SCALE_METHODS:
        cv.problem(
            n,
            f"upscale_method '{method}' has no nodegraph counterpart (known: {', '.join(SCALE_METHODS)})",
            "upscale_method",
        )
        return None
    return str(method)


def _image_scale(cv: Converter, n: WfNode, by: bool = False) -> list[Any]:
    image, method = cv.input(n, "image"), _method(cv, n)
    if method is None:
        return [None]
    if by:
        factor = cv.param("image_scale_by", float(cv.literal(n, "scale_by", 1.0)), "Image scale factor")
        return ["@" + cv.add("scaled", "core.scale", image=image, scale_by=factor, method=method)]
    crop = cv.literal(n, "crop", "disabled")
    if crop not in ("disabled", "center"):
        cv.problem(n, f"crop '{crop}' is neither 'disabled' nor 'center'", "crop")
        return [None]
    if cv.literal(n, "width", 512) == 0 and cv.literal(n, "height", 512) == 0:
        return [image]  # ComfyUI passes the image through unscaled
    name = cv.add(
        "scaled",
        "core.scale",
        image=image,
        width=cv.param("image_width", cv.literal(n, "width", 512), "Scaled image width (0: keep aspect)"),
        height=cv.param("image_height", cv.literal(n, "height", 512), "Scaled image height (0: keep aspect)"),
        method=method,
        crop=crop if crop != "disabled" else None,
    )
    return ["@" + name]


def _upscale_loader(cv: Converter, n: WfNode) -> list[Any]:
    path = cv.param(
        "upscale_model",
        cv.literal(n, "model_name"),
        "Upscale model file (searched in --models DIR/upscale_models)",
    )
    return ["@" + cv.add("upscale_model", "upscale.load_model", path=path)]


def _upscale_apply(cv: Converter, n: WfNode) -> list[Any]:
    model, image = cv.input(n, "upscale_model"), cv.input(n, "image")
    return ["@" + cv.add("upscaled_image", "upscale.apply", model=model, image=image)]


def _canny(cv: Converter, n: WfNode) -> list[Any]:
    name = cv.add(
        "edges",
        "control.canny_kornia",
        image=cv.input(n, "image"),
        low_threshold=cv.param(
            "canny_low", float(cv.literal(n, "low_threshold", 0.4)), "Canny lower threshold"
        ),
        high_threshold=cv.param(
            "canny_high", float(cv.literal(n, "high_threshold", 0.8)), "Canny upper threshold"
        ),
    )
    return ["@" + name]


def _invert(cv: Converter, n: WfNode) -> list[Any]:
    return ["@" + cv.add("inverted", "core.invert_image", image=cv.input(n, "image"))]


def _sdxl_text(cv: Converter, n: WfNode, refiner: bool = False) -> list[Any]:
    clip = cv.input(n, "clip", kind=Clip)
    role = cv.roles.get(n.id)
    key = {"positive": "prompt", "negative": "negative"}.get(role or "", "text")
    described = {"prompt": "What to draw", "negative": "What to avoid"}.get(key, "Prompt text")
    texts = [cv.input(n, k, "") for k in (("text",) if refiner else ("text_g", "text_l"))]
    if not all(isinstance(t, str) for t in texts):
        cv.problem(
            n, "the prompt must be a literal or come from a text output", "text" if refiner else "text_g"
        )
        return [None]
    if clip is None:
        return [None]
    inputs: dict[str, Any] = {"encoder": clip.encoder, "clip_skip": clip.skip or None}
    main = cv.param(key, texts[0], described + (" (SDXL's second, larger encoder)" if not refiner else ""))
    if refiner:
        score = float(cv.literal(n, "ascore", 6.0))
        if not 0 <= score <= 10:
            cv.problem(n, f"ascore {score}: nodegraph's aesthetic score is 0..10", "ascore")
        inputs.update(text=main, aesthetic_score=score)
    elif texts[1] == texts[0]:
        inputs["text"] = main  # one text for both encoders
    else:  # diffusers' `prompt` feeds CLIP-L (ComfyUI's text_l), `prompt_2` OpenCLIP-G (text_g)
        inputs.update(
            text=cv.param(f"{key}_l", texts[1], described + " (SDXL's CLIP-L encoder)"), text_2=main
        )
    inputs.update(original_width=cv.literal(n, "width", 1024), original_height=cv.literal(n, "height", 1024))
    if not refiner:
        inputs.update(
            crop_left=cv.literal(n, "crop_w", 0),
            crop_top=cv.literal(n, "crop_h", 0),
            target_width=cv.literal(n, "target_width", 1024),
            target_height=cv.literal(n, "target_height", 1024),
        )
    return [Cond("@" + cv.add(role or "prompt", "diffusion.encode_text", **inputs))]


def _mapping(class_type: str, convert: Any, nodegraph: str, notes: str = "") -> ClassMapping:
    return ClassMapping(class_type, convert, WIDGETS.get(class_type, ()), False, nodegraph, notes)


def image_mappings() -> list[ClassMapping]:
    """The image, mask, inpaint, upscale and SDXL-prompt classes the built-in packs serve."""
    return [
        _mapping(
            "VAEEncodeForInpaint",
            _vae_encode_inpaint,
            "diffusion.vae_encode_for_inpaint",
            "crop to multiples of 8, grow_mask_by, masked pixels to grey, the latent mean",
        ),
        _mapping(
            "ImagePadForOutpaint", _pad_for_outpaint, "core.pad_for_outpaint", "grey fill, feathered mask"
        ),
        _mapping("GrowMask", _grow_mask, "core.grow_mask", "scipy grey dilation/erosion, as ComfyUI"),
        _mapping(
            "LoadImageMask",
            _load_image_mask,
            "core.load_mask (+ invert_mask for alpha)",
            "an image without alpha is an error (ComfyUI: an empty mask)",
        ),
        _mapping("ImageCompositeMasked", _composite, "core.composite_masked"),
        _mapping("ImageScale", _image_scale, "core.scale", "torch interpolation like ComfyUI; no bislerp"),
        _mapping("ImageScaleBy", lambda cv, n: _image_scale(cv, n, by=True), "core.scale (scale_by)"),
        _mapping("ImageInvert", _invert, "core.invert_image"),
        _mapping("Canny", _canny, "control.canny_kornia", "kornia's Canny, as ComfyUI (needs kornia)"),
        _mapping(
            "UpscaleModelLoader",
            _upscale_loader,
            "upscale.load_model",
            "spandrel; safetensors, pickled .pth only with --allow-pickle",
        ),
        _mapping("ImageUpscaleWithModel", _upscale_apply, "upscale.apply", "tiles 512, overlap 32, float32"),
        _mapping(
            "CLIPTextEncodeSDXL",
            _sdxl_text,
            "diffusion.encode_text (text_2, sizes, crop)",
            "text_l -> text, text_g -> text_2; width/height -> original size",
        ),
        _mapping(
            "CLIPTextEncodeSDXLRefiner",
            lambda cv, n: _sdxl_text(cv, n, refiner=True),
            "diffusion.encode_text (aesthetic_score)",
            "ascore 0..10",
        ),
    ]
