"""Widget names of ComfyUI's core classes, in the order a UI-format file lists `widgets_values`.

Why a table: a UI (litegraph) file stores widget values by position only, so reading one needs each
class's widget inputs in `INPUT_TYPES` order (ComfyUI's `nodes.py`). `CONTROL` marks where the
front end adds its `control_after_generate` entry ("fixed", "randomize", ...), which is not an input.
A pack that maps its own classes gives their widget names in its `ClassMapping.widgets`.
"""

from __future__ import annotations

CONTROL = "\x00control_after_generate"  # a widget slot that is no API input
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})

WIDGETS: dict[str, tuple[str, ...]] = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "VAELoader": ("vae_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "CLIPTextEncode": ("text",),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "ConditioningCombine": (),
    "ConditioningSetArea": ("width", "height", "x", "y", "strength"),
    "ConditioningSetAreaPercentage": ("width", "height", "x", "y", "strength"),
    "ConditioningSetAreaStrength": ("strength",),
    "ConditioningZeroOut": (),
    "ControlNetLoader": ("control_net_name",),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "LatentUpscale": ("upscale_method", "width", "height", "crop"),
    "LatentUpscaleBy": ("upscale_method", "scale_by"),
    "KSampler": ("seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        CONTROL,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "VAEDecode": (),
    "VAEEncode": (),
    "VAEEncodeForInpaint": ("grow_mask_by",),
    "SetLatentNoiseMask": (),
    "LoadImage": ("image", "upload"),
    "LoadImageMask": ("image", "channel", "upload"),
    "ImageScale": ("upscale_method", "width", "height", "crop"),
    "ImageScaleBy": ("upscale_method", "scale_by"),
    "ImagePadForOutpaint": ("left", "top", "right", "bottom", "feathering"),
    "ImageCompositeMasked": ("x", "y", "resize_source"),
    "GrowMask": ("expand", "tapered_corners"),
    "UpscaleModelLoader": ("model_name",),
    "ImageUpscaleWithModel": (),
    "SaveImage": ("filename_prefix",),
    "PreviewImage": (),
    "Canny": ("low_threshold", "high_threshold"),
    "CheckpointLoader": ("config_name", "ckpt_name"),
    "CLIPTextEncodeSDXL": (
        "width",
        "height",
        "crop_w",
        "crop_h",
        "target_width",
        "target_height",
        "text_g",
        "text_l",
    ),
    "CLIPTextEncodeSDXLRefiner": ("ascore", "width", "height", "text"),
    "TripleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3"),
    "ControlNetApplySD3": ("strength", "start_percent", "end_percent"),
}

# Keys the front ends write beside real inputs (upload buttons); never inputs of the class.
UI_ONLY_INPUTS = frozenset({"upload", "choose file to upload"})


def widget_inputs(names: tuple[str, ...], values: list[object]) -> dict[str, object]:
    """Positional `widgets_values` to {input: value}, skipping control_after_generate entries.

    A control entry is skipped only where the value there is one of the front end's control words,
    so files written by front ends that leave it out still read right.
    """
    result: dict[str, object] = {}
    index = 0
    for name in names:
        if index >= len(values):
            break
        if name == CONTROL:
            if isinstance(values[index], str) and values[index] in CONTROL_VALUES:
                index += 1
            continue
        result[name] = values[index]
        index += 1
    return {k: v for k, v in result.items() if k not in UI_ONLY_INPUTS}
