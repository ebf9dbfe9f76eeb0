"""The ComfyUI core classes that nodegraph's built-in packs serve, as `ClassMapping`s.

Each function emits nodegraph nodes for one ComfyUI node and returns what its output slots carry
(in ComfyUI's slot order). Widget values a user would change become params. Where nodegraph's
semantics differ from ComfyUI's, the mapping's `notes` say so (they feed docs/comfyui.md).
"""

from __future__ import annotations

from typing import Any

from nodegraph_comfyui.classes_images import image_mappings
from nodegraph_comfyui.conditioning_classes import conditioning_mappings
from nodegraph_comfyui.convert import ClassMapping, Clip, Cond, Converter, Model
from nodegraph_comfyui.samplers import k_sampler_settings, scheduler_settings
from nodegraph_comfyui.widgets import WIDGETS
from nodegraph_comfyui.workflow import WfNode


def _checkpoint(cv: Converter, n: WfNode) -> list[Any]:
    path = cv.param(
        "checkpoint", cv.literal(n, "ckpt_name"), "Checkpoint file (searched in --models DIR/checkpoints)"
    )
    name = cv.add("checkpoint", "diffusion.load_model", path=path)
    return [Model(f"@{name}.unet", name), Clip(f"@{name}.text_encoder"), f"@{name}.vae"]


def _vae_loader(cv: Converter, n: WfNode) -> list[Any]:
    path = cv.param("vae", cv.literal(n, "vae_name"), "VAE file (searched in --models DIR/vae)")
    return ["@" + cv.add("vae", "diffusion.load_vae", path=path)]


def _lora(cv: Converter, n: WfNode, model_only: bool = False) -> list[Any]:
    model = cv.input(n, "model", kind=Model)
    clip = None if model_only else cv.input(n, "clip", kind=Clip)
    if model is None or (clip is None and not model_only):
        return [None, None]
    path = cv.param("lora", cv.literal(n, "lora_name"), "LoRA file (searched in --models DIR/loras)")
    unet_w = cv.param(
        "lora_strength", float(cv.literal(n, "strength_model", 1.0)), "LoRA strength on the UNet"
    )
    encoder = f"@{model.loader}.text_encoder" if clip is None else clip.encoder
    te_w = (
        0.0
        if clip is None
        else cv.param(
            "lora_clip_strength",
            float(cv.literal(n, "strength_clip", 1.0)),
            "LoRA strength on the text encoder",
        )
    )
    name = cv.add(
        "lora",
        "diffusion.load_lora",
        unet=model.unet,
        text_encoder=encoder,
        path=path,
        unet_weight=unet_w,
        text_encoder_weight=te_w,
    )
    out_model = Model(f"@{name}.unet", model.loader)
    if model_only:
        return [out_model]
    return [out_model, Clip(f"@{name}.text_encoder", clip.skip if clip else 0)]


def _clip_last_layer(cv: Converter, n: WfNode) -> list[Any]:
    clip = cv.input(n, "clip", kind=Clip)
    stop = cv.literal(n, "stop_at_clip_layer", -1)
    if clip is None or not isinstance(stop, int) or not -5 <= stop <= -1:
        if clip is not None:
            cv.problem(
                n,
                f"stop_at_clip_layer {stop!r}: nodegraph skips at most 4 layers (-5..-1)",
                "stop_at_clip_layer",
            )
        return [None]
    return [Clip(clip.encoder, -1 - stop)]


def _text(cv: Converter, n: WfNode) -> list[Any]:
    clip = cv.input(n, "clip", kind=Clip)
    role = cv.roles.get(n.id)
    key = {"positive": "prompt", "negative": "negative"}.get(role or "", "text")
    text = cv.input(n, "text", "")
    if not isinstance(text, str):
        cv.problem(n, "text must be a literal or come from a text output", "text")
        return [None]
    if clip is None:
        return [None]
    described = {"prompt": "What to draw", "negative": "What to avoid"}.get(key, "Prompt text")
    name = cv.add(
        role or "prompt",
        "diffusion.encode_text",
        encoder=clip.encoder,
        text=cv.param(key, text, described),
        clip_skip=clip.skip or None,
    )
    return [Cond("@" + name)]


def _empty_latent(cv: Converter, n: WfNode) -> list[Any]:
    name = cv.add(
        "empty",
        "diffusion.empty_latents",
        width=cv.param("width", cv.literal(n, "width", 512), "Width in pixels (multiple of 8)"),
        height=cv.param("height", cv.literal(n, "height", 512), "Height in pixels (multiple of 8)"),
        batch=cv.param("batch", cv.literal(n, "batch_size", 1), "Images per run"),
    )
    return ["@" + name]


def _sampler(cv: Converter, n: WfNode, advanced: bool = False) -> list[Any]:
    model = cv.input(n, "model", kind=Model)
    positive = cv.input(n, "positive", kind=Cond)
    negative = cv.input(n, "negative", kind=Cond)
    latents = cv.input(n, "latent_image")
    sampler_name, schedule = cv.literal(n, "sampler_name", "euler"), cv.literal(n, "scheduler", "normal")
    if k_sampler_settings(str(sampler_name), str(schedule)):  # ComfyUI's own semantics
        if None in (model, positive, negative, latents):
            return [None]
        sched = cv.add(
            "scheduler",
            "diffusion.k_sampler",
            model_scheduler=f"@{model.loader}.scheduler",
            sampler=cv.param("sampler", sampler_name, "Sampler (ComfyUI's sampler_name)"),
            scheduler=cv.param("scheduler", schedule, "Sigma schedule (ComfyUI's scheduler)"),
        )
    else:  # a sampler k-diffusion lacks: the nearest diffusers scheduler
        settings = scheduler_settings(str(sampler_name), str(schedule))
        if isinstance(settings, str):
            cv.problem(n, settings, "sampler_name" if "sampler '" in settings else "scheduler")
            return [None]
        if None in (model, positive, negative, latents):
            return [None]
        sched_name, extra = settings
        sched = cv.add(
            "scheduler",
            "diffusion.scheduler",
            model_scheduler=f"@{model.loader}.scheduler",
            name=cv.param(
                "sampler",
                sched_name,
                f"Scheduler (nodegraph name; imported from ComfyUI's '{sampler_name}' / '{schedule}')",
            ),
            **extra,
        )
    controls = list(dict.fromkeys([*positive.controls, *negative.controls]))
    inputs: dict[str, Any] = {
        "unet": model.unet,
        "scheduler": "@" + sched,
        "positive": positive.ref,
        "negative": negative.ref,
        "latents": latents,
        "seed": cv.param(
            "seed", cv.literal(n, "noise_seed" if advanced else "seed", 0), "Noise seed", minimum=0
        ),
        "steps": cv.param("steps", cv.literal(n, "steps", 20), "Sampling steps", minimum=1),
        "cfg": cv.param("cfg", float(cv.literal(n, "cfg", 8.0)), "Guidance scale", minimum=0),
        "conditions": controls or None,
    }
    if advanced:
        end = cv.literal(n, "end_at_step", 10000)
        inputs.update(
            start_step=cv.literal(n, "start_at_step", 0),
            end_step=end if isinstance(end, int) and end < 1000 else None,
            add_noise=cv.literal(n, "add_noise", "enable") == "enable",
            return_with_leftover_noise=cv.literal(n, "return_with_leftover_noise", "disable") == "enable",
        )
    else:
        denoise = float(cv.literal(n, "denoise", 1.0))
        inputs["denoise"] = (
            cv.param("denoise", denoise, "Denoise strength (1 = from noise)", minimum=0, maximum=1)
            if denoise != 1.0
            else None
        )
    return ["@" + cv.add("latents", "diffusion.sample", **inputs)]


def _vae_decode(cv: Converter, n: WfNode) -> list[Any]:
    latents, vae = cv.input(n, "samples"), cv.input(n, "vae")
    return ["@" + cv.add("image", "diffusion.vae_decode", vae=vae, latents=latents)]


def _vae_encode(cv: Converter, n: WfNode) -> list[Any]:
    image, vae = cv.input(n, "pixels"), cv.input(n, "vae")
    return ["@" + cv.add("encoded", "diffusion.vae_encode", vae=vae, image=image, mode="mean")]


def _save(cv: Converter, n: WfNode, preview: bool = False) -> list[Any]:
    image = cv.input(n, "images")
    prefix = "preview" if preview else str(cv.literal(n, "filename_prefix", "ComfyUI"))
    name = cv.add("save" if not preview else "preview", "core.save_image", image=image, path="")
    cv.nodes[name]["path"] = f"{prefix.strip('/') or 'ComfyUI'}_{name}.png"
    return []


def _image_name(cv: Converter, value: Any) -> Any:
    return cv.input_file(value) if isinstance(value, str) else value


def _load_image(cv: Converter, n: WfNode) -> list[Any]:
    path = cv.param(
        "image",
        _image_name(cv, cv.literal(n, "image")),
        "Input image (beside the workflow file, else in ComfyUI's input/ folder)",
        type="path",
    )
    name = cv.add("load_image", "core.load_image", path=path)

    def mask() -> str:  # ComfyUI's mask is 1 - alpha: transparent pixels are repainted
        alpha = cv.add("alpha", "core.load_mask", path=path, channel="alpha")
        return "@" + cv.add("mask", "core.invert_mask", mask="@" + alpha)

    return ["@" + name, mask]


def _controlnet_loader(cv: Converter, n: WfNode) -> list[Any]:
    path = cv.param(
        "controlnet",
        cv.literal(n, "control_net_name"),
        "ControlNet file (searched in --models DIR/controlnet)",
    )
    return ["@" + cv.add("controlnet", "control.load_controlnet", path=path)]


def _control_apply(cv: Converter, n: WfNode) -> list[Any]:
    cond = cv.input(n, "conditioning", kind=Cond)
    model, image = cv.input(n, "control_net"), cv.input(n, "image")
    strength = cv.param(
        "control_strength", float(cv.literal(n, "strength", 1.0)), "ControlNet strength", minimum=0, maximum=2
    )
    if cond is None:
        return [None]
    unit = cv.add("control", "control.controlnet", model=model, image=image, strength=strength)
    return [Cond(cond.ref, (*cond.controls, "@" + unit))]


def _control_apply_advanced(cv: Converter, n: WfNode) -> list[Any]:
    pos, neg = cv.input(n, "positive", kind=Cond), cv.input(n, "negative", kind=Cond)
    model, image = cv.input(n, "control_net"), cv.input(n, "image")
    strength = cv.param(
        "control_strength", float(cv.literal(n, "strength", 1.0)), "ControlNet strength", minimum=0, maximum=2
    )
    start, end = float(cv.literal(n, "start_percent", 0.0)), float(cv.literal(n, "end_percent", 1.0))
    if pos is None or neg is None:
        return [None, None]
    unit = "@" + cv.add(
        "control",
        "control.controlnet",
        model=model,
        image=image,
        strength=strength,
        start=start or None,
        end=end if end != 1.0 else None,
    )
    return [Cond(pos.ref, (*pos.controls, unit)), Cond(neg.ref, neg.controls)]


def _latent_upscale(cv: Converter, n: WfNode, by: bool = False) -> list[Any]:
    latents = cv.input(n, "samples")
    method = cv.literal(n, "upscale_method", "nearest-exact")
    if method not in ("nearest-exact", "bilinear", "bicubic", "area"):
        cv.problem(
            n,
            f"upscale_method '{method}' has no nodegraph counterpart (nearest-exact, bilinear, "
            "bicubic, area)",
            "upscale_method",
        )
        return [None]
    if by:
        scale = cv.param("upscale_by", float(cv.literal(n, "scale_by", 1.5)), "Latent upscale factor")
        return [
            "@" + cv.add("upscaled", "diffusion.latent_upscale", latents=latents, scale=scale, method=method)
        ]
    if cv.literal(n, "crop", "disabled") != "disabled":
        cv.problem(n, "crop 'center' has no nodegraph counterpart yet", "crop")
    return [
        "@"
        + cv.add(
            "upscaled",
            "diffusion.latent_upscale",
            latents=latents,
            method=method,
            width=cv.param("upscale_width", cv.literal(n, "width", 1024), "Upscaled width"),
            height=cv.param("upscale_height", cv.literal(n, "height", 1024), "Upscaled height"),
        )
    ]


def _set_noise_mask(cv: Converter, n: WfNode) -> list[Any]:
    latents, mask = cv.input(n, "samples"), cv.input(n, "mask")
    return ["@" + cv.add("masked", "diffusion.set_mask", latents=latents, mask=mask, binarize=False)]


def _mapping(
    class_type: str, convert: Any, nodegraph: str, notes: str = "", output: bool = False
) -> ClassMapping:
    return ClassMapping(class_type, convert, WIDGETS.get(class_type, ()), output, nodegraph, notes)


def core_mappings() -> list[ClassMapping]:
    """Every ComfyUI class the built-in packs serve (the image, mask and upscale ones: classes_images)."""
    return [
        *image_mappings(),
        _mapping(
            "CheckpointLoaderSimple",
            _checkpoint,
            "diffusion.load_model",
            "SD1.x and SDXL (base, refiner) single files or diffusers folders",
        ),
        _mapping("VAELoader", _vae_loader, "diffusion.load_vae"),
        _mapping("LoraLoader", _lora, "diffusion.load_lora"),
        _mapping(
            "LoraLoaderModelOnly",
            lambda cv, n: _lora(cv, n, model_only=True),
            "diffusion.load_lora",
            "text encoder weight 0",
        ),
        _mapping(
            "CLIPTextEncode",
            _text,
            "diffusion.encode_text",
            "(word:1.3) emphasis is read A1111's way (ComfyUI weights differently)",
        ),
        _mapping("CLIPSetLastLayer", _clip_last_layer, "encode_text clip_skip", "-2 = clip_skip 1"),
        _mapping("EmptyLatentImage", _empty_latent, "diffusion.empty_latents"),
        _mapping(
            "KSampler",
            _sampler,
            "diffusion.k_sampler + diffusion.sample",
            "ComfyUI's semantics: k-diffusion's sampler on ComfyUI's sigma table, denoiser, CFG, CPU noise "
            "and denoise rule; ddpm, uni_pc, deis, lcm fall back to the nearest diffusers scheduler",
        ),
        _mapping(
            "KSamplerAdvanced",
            lambda cv, n: _sampler(cv, n, advanced=True),
            "diffusion.k_sampler + diffusion.sample",
            "start/end_at_step, add_noise, return_with_leftover_noise with ComfyUI's sigma cuts",
        ),
        *conditioning_mappings(),
        _mapping("VAEDecode", _vae_decode, "diffusion.vae_decode"),
        _mapping(
            "VAEEncode",
            _vae_encode,
            "diffusion.vae_encode",
            "the latent mean (deterministic; we read ComfyUI's encoder as taking the mean too, not verified)",
        ),
        _mapping("SaveImage", _save, "core.save_image", "writes PREFIX_NODE.png in --out", output=True),
        _mapping(
            "PreviewImage",
            lambda cv, n: _save(cv, n, preview=True),
            "core.save_image",
            "saved as preview_NODE.png",
            output=True,
        ),
        _mapping(
            "LoadImage",
            _load_image,
            "core.load_image (+ load_mask alpha, invert_mask)",
            "the file is read relative to the workflow file (ComfyUI: its input/ folder)",
        ),
        _mapping("ControlNetLoader", _controlnet_loader, "control.load_controlnet"),
        _mapping(
            "ControlNetApply",
            _control_apply,
            "control.controlnet in the sampler's conditions",
            "nodegraph applies the unit to both CFG halves (ComfyUI: the positive only)",
        ),
        _mapping(
            "ControlNetApplyAdvanced",
            _control_apply_advanced,
            "control.controlnet (start, end)",
            "one unit for both halves; a unit attached only to the negative is not supported",
        ),
        _mapping("LatentUpscale", _latent_upscale, "diffusion.latent_upscale"),
        _mapping(
            "LatentUpscaleBy", lambda cv, n: _latent_upscale(cv, n, by=True), "diffusion.latent_upscale"
        ),
        _mapping("SetLatentNoiseMask", _set_noise_mask, "diffusion.set_mask"),
    ]
