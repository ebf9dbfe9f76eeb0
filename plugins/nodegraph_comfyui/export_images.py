"""Export of the image, mask, inpaint, upscale and SDXL-prompt nodes: the reverse of `classes_images`.

What the import unfolded is folded back: `core.invert_mask` of an alpha `core.load_mask` becomes the
MASK output (slot 1) of the LoadImage reading the same file, or a LoadImageMask reading its alpha;
`core.scale` becomes ImageScale or ImageScaleBy; `diffusion.encode_text` with SDXL's second text,
sizes or aesthetic score becomes CLIPTextEncodeSDXL(Refiner). Values ComfyUI's classes cannot hold
(a luminance mask, upscale tiles other than ComfyUI's 512/32) are reported, not dropped.
"""

from __future__ import annotations

from typing import Any

SDXL_SIZES = ("original_width", "original_height", "crop_left", "crop_top", "target_width", "target_height")


def _vae_encode_inpaint(ex: Any, name: str, n: dict[str, Any]) -> str:
    return ex.new(
        "VAEEncodeForInpaint",
        pixels=ex.link(n["image"], name),
        vae=ex.link(n["vae"], name),
        mask=ex.link(n["mask"], name),
        grow_mask_by=n.get("grow_mask_by", 6),
    )


def _pad(ex: Any, name: str, n: dict[str, Any]) -> str:
    sides = {k: n.get(k, 0) for k in ("left", "top", "right", "bottom")}
    return ex.new(
        "ImagePadForOutpaint", image=ex.link(n["image"], name), **sides, feathering=n.get("feathering", 40)
    )


def _load_mask(ex: Any, name: str, n: dict[str, Any]) -> str:
    channel = n.get("channel", "luminance")
    if channel not in ("red", "green", "blue"):
        ex.problems.append(
            f"node '{name}' (core.load_mask): channel '{channel}' has no ComfyUI counterpart "
            "(LoadImageMask reads red, green, blue or 1 - alpha)"
        )
    return ex.new("LoadImageMask", image=n["path"], channel=channel, upload="image")


def _invert_mask(ex: Any, name: str, n: dict[str, Any]) -> str | None:
    source_name = str(n.get("mask", ""))[1:].partition(".")[0]
    source = ex.nodes.get(source_name, {})
    if source.get("type") != "core.load_mask" or source.get("channel") != "alpha":
        ex.problems.append(
            f"node '{name}' (core.invert_mask): only the inverted alpha of a loaded image "
            "(ComfyUI's image mask) has a ComfyUI counterpart"
        )
        return None
    reader = next(
        (
            k
            for k, v in ex.nodes.items()
            if v.get("type") == "core.load_image" and v.get("path") == source.get("path")
        ),
        None,
    )
    if reader is None:
        return ex.new("LoadImageMask", image=source["path"], channel="alpha", upload="image")
    node_id = ex.emit(reader)
    ex.slot_of[name] = 1  # LoadImage's MASK output
    return node_id  # type: ignore[no-any-return]


def _scale(ex: Any, name: str, n: dict[str, Any]) -> str:
    image, method = ex.link(n["image"], name), n.get("method", "nearest-exact")
    if not n.get("width") and not n.get("height") and n.get("scale_by") is not None:
        return ex.new("ImageScaleBy", image=image, upscale_method=method, scale_by=n["scale_by"])
    return ex.new(
        "ImageScale",
        image=image,
        upscale_method=method,
        width=n.get("width", 0),
        height=n.get("height", 0),
        crop=n.get("crop", "disabled"),
    )


def _upscale_apply(ex: Any, name: str, n: dict[str, Any]) -> str:
    if (n.get("tile", 512), n.get("overlap", 32)) != (512, 32):
        ex.problems.append(f"node '{name}' (upscale.apply): ComfyUI tiles by 512 with an overlap of 32 only")
    return ex.new(
        "ImageUpscaleWithModel", upscale_model=ex.link(n["model"], name), image=ex.link(n["image"], name)
    )


def _composite(ex: Any, name: str, n: dict[str, Any]) -> str:
    mask = {"mask": ex.link(n["mask"], name)} if n.get("mask") is not None else {}
    return ex.new(
        "ImageCompositeMasked",
        destination=ex.link(n["destination"], name),
        source=ex.link(n["source"], name),
        x=n.get("x", 0),
        y=n.get("y", 0),
        resize_source=bool(n.get("resize_source", False)),
        **mask,
    )


def sdxl_encode(ex: Any, node: dict[str, Any], clip: Any) -> str | None:
    """CLIPTextEncodeSDXL(Refiner) for an encode_text with SDXL inputs set; None for a plain one."""
    text = node.get("text", "")
    if node.get("aesthetic_score") is not None:
        return ex.new(
            "CLIPTextEncodeSDXLRefiner",
            ascore=node["aesthetic_score"],
            width=node.get("original_width", 0),
            height=node.get("original_height", 0),
            text=text,
            clip=clip,
        )
    if node.get("text_2") is None and not any(node.get(k) for k in SDXL_SIZES):
        return None
    return ex.new(
        "CLIPTextEncodeSDXL",
        width=node.get("original_width", 0),
        height=node.get("original_height", 0),
        crop_w=node.get("crop_left", 0),
        crop_h=node.get("crop_top", 0),
        target_width=node.get("target_width", 0),
        target_height=node.get("target_height", 0),
        text_g=text if node.get("text_2") is None else node["text_2"],
        text_l=text,
        clip=clip,
    )


HANDLERS: dict[str, Any] = {
    "diffusion.vae_encode_for_inpaint": _vae_encode_inpaint,
    "core.pad_for_outpaint": _pad,
    "core.grow_mask": lambda ex, name, n: ex.new(
        "GrowMask",
        mask=ex.link(n["mask"], name),
        expand=n.get("expand", 0),
        tapered_corners=bool(n.get("tapered_corners", True)),
    ),
    "core.load_mask": _load_mask,
    "core.invert_mask": _invert_mask,
    "core.composite_masked": _composite,
    "core.scale": _scale,
    "core.invert_image": lambda ex, name, n: ex.new("ImageInvert", image=ex.link(n["image"], name)),
    "control.canny_kornia": lambda ex, name, n: ex.new(
        "Canny",
        image=ex.link(n["image"], name),
        low_threshold=n.get("low_threshold", 0.4),
        high_threshold=n.get("high_threshold", 0.8),
    ),
    "upscale.load_model": lambda ex, name, n: ex.new("UpscaleModelLoader", model_name=n["path"]),
    "upscale.apply": _upscale_apply,
}
OUTPUT_SLOTS: dict[str, dict[str, int]] = {"core.pad_for_outpaint": {"image": 0, "mask": 1}}
