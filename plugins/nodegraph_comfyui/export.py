"""Export a nodegraph graph to ComfyUI's API format, for graphs whose nodes all have a ComfyUI twin.

The reverse of `classes`: what the import folded into nodegraph inputs is unfolded again
(`clip_skip` -> a CLIPSetLastLayer shared by the encoders of one text encoder, a sampler's ControlNet
`conditions` -> ControlNetApply nodes chained on its positive prompt, scheduler + sample -> KSampler or
KSamplerAdvanced). Input is a resolved graph document (`Plan.resolved`: params replaced by values).
Nodes with no ComfyUI counterpart are all listed in one `ConversionError`.
"""

from __future__ import annotations

import re
from typing import Any

from nodegraph_comfyui.convert import ConversionError
from nodegraph_comfyui.export_images import HANDLERS as IMAGE_HANDLERS
from nodegraph_comfyui.export_images import OUTPUT_SLOTS as IMAGE_SLOTS
from nodegraph_comfyui.export_images import sdxl_encode
from nodegraph_comfyui.samplers import SAMPLERS

OUTPUT_SLOTS: dict[str, dict[str, int]] = {
    "diffusion.load_model": {"unet": 0, "text_encoder": 1, "vae": 2},
    "diffusion.load_lora": {"unet": 0, "text_encoder": 1},
    **IMAGE_SLOTS,
}
_SAMPLER_NAMES = {ours: theirs for theirs, ours in reversed(list(SAMPLERS.items()))}


class _Exporter:
    def __init__(self, graph: dict[str, Any]) -> None:
        self.nodes: dict[str, Any] = graph.get("nodes") or {}
        self.prompt: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, str] = {}
        self.shared: dict[tuple[Any, ...], str] = {}
        self.problems: list[str] = []
        self.slot_of: dict[str, int] = {}  # node name -> the output slot its links take (set by handlers)

    def new(self, class_type: str, **inputs: Any) -> str:
        node_id = str(len(self.prompt) + 1)
        self.prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    def link(self, ref: Any, consumer: str) -> Any:
        """`[id, slot]` for a `@node.output` reference, exporting that node first."""
        if not isinstance(ref, str) or not ref.startswith("@"):
            self.problems.append(f"node '{consumer}': expected a link, got {ref!r}")
            return None
        name, _, output = ref[1:].partition(".")
        node_id = self.emit(name)
        if node_id is None:
            return None
        slots = OUTPUT_SLOTS.get(self.nodes[name]["type"], {})
        return [node_id, self.slot_of.get(name, slots.get(output, 0))]

    def emit(self, name: str) -> str | None:
        if name in self.ids:
            return self.ids[name]
        node = self.nodes.get(name)
        handler = _HANDLERS.get(node["type"]) if node else None
        if handler is None:
            kind = node["type"] if node else "missing"
            self.problems.append(f"node '{name}' ({kind}): no ComfyUI counterpart")
            return None
        self.ids[name] = node_id = handler(self, name, node)
        return node_id


def _encode(ex: _Exporter, name: str, node: dict[str, Any]) -> str:
    clip = ex.link(node["encoder"], name)
    skip = int(node.get("clip_skip") or 0)
    if skip:
        key = ("skip", str(node["encoder"]), skip)
        if key not in ex.shared:
            ex.shared[key] = ex.new("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-1 - skip)
        clip = [ex.shared[key], 0]
    return sdxl_encode(ex, node, clip) or ex.new("CLIPTextEncode", text=node.get("text", ""), clip=clip)


def _schedule(ex: _Exporter, name: str, ref: Any) -> tuple[str, str]:
    sched = ex.nodes.get(str(ref)[1:].partition(".")[0], {})
    if sched.get("type") == "diffusion.k_sampler":  # ComfyUI's own names, nothing to translate
        return str(sched.get("sampler", "euler")), str(sched.get("scheduler", "normal"))
    if sched.get("type") != "diffusion.scheduler":
        ex.problems.append(
            f"node '{name}': its scheduler must be a diffusion.scheduler or diffusion.k_sampler node"
        )
        return "euler", "normal"
    spacing = sched.get("timestep_spacing")
    flags = [f for f in ("karras", "exponential", "beta") if sched.get(f)]
    scheduler = (
        flags[0] if flags else {"trailing": "simple", "leading": "ddim_uniform"}.get(spacing, "normal")
    )
    sampler = _SAMPLER_NAMES.get(str(sched.get("name")))
    if sampler is None:
        ex.problems.append(f"node '{name}': scheduler '{sched.get('name')}' has no ComfyUI sampler_name")
        sampler = "euler"
    return sampler, scheduler


def _sample(ex: _Exporter, name: str, node: dict[str, Any]) -> str:
    sampler, scheduler = _schedule(ex, name, node.get("scheduler"))
    positive, negative = ex.link(node["positive"], name), ex.link(node.get("negative"), name)
    for unit_ref in node.get("conditions") or []:
        unit = ex.nodes.get(str(unit_ref)[1:].partition(".")[0], {})
        if unit.get("type") != "control.controlnet":
            ex.problems.append(f"node '{name}': condition {unit_ref} has no ComfyUI counterpart")
            continue
        start, end = float(unit.get("start", 0.0)), float(unit.get("end", 1.0))
        common = {
            "control_net": ex.link(unit["model"], name),
            "image": ex.link(unit["image"], name),
            "strength": unit.get("strength", 1.0),
        }
        if start == 0.0 and end == 1.0:
            positive = [ex.new("ControlNetApply", conditioning=positive, **common), 0]
        else:
            applied = ex.new(
                "ControlNetApplyAdvanced",
                positive=positive,
                negative=negative,
                **common,
                start_percent=start,
                end_percent=end,
            )
            positive, negative = [applied, 0], [applied, 1]
    common = {
        "model": ex.link(node["unet"], name),
        "steps": node.get("steps", 20),
        "cfg": node.get("cfg", 7.5),
        "sampler_name": sampler,
        "scheduler": scheduler,
        "positive": positive,
        "negative": negative,
        "latent_image": ex.link(node["latents"], name),
    }
    advanced = (
        int(node.get("start_step") or 0) != 0
        or node.get("end_step") is not None
        or node.get("add_noise", True) is False
        or node.get("return_with_leftover_noise", True) is False
    )
    if not advanced:
        return ex.new("KSampler", seed=node.get("seed", 0), denoise=node.get("denoise", 1.0), **common)
    return ex.new(
        "KSamplerAdvanced",
        add_noise="enable" if node.get("add_noise", True) else "disable",
        noise_seed=node.get("seed", 0),
        start_at_step=int(node.get("start_step") or 0),
        end_at_step=10000 if node.get("end_step") is None else node["end_step"],
        return_with_leftover_noise="enable" if node.get("return_with_leftover_noise", True) else "disable",
        **common,
    )


def _save(ex: _Exporter, name: str, node: dict[str, Any]) -> str:
    prefix = re.sub(rf"(_{re.escape(name)})?\.png$", "", str(node.get("path", "ComfyUI.png")))
    return ex.new("SaveImage", images=ex.link(node["image"], name), filename_prefix=prefix)


def _upscale(ex: _Exporter, name: str, node: dict[str, Any]) -> str:
    samples, method = ex.link(node["latents"], name), node.get("method", "nearest-exact")
    if node.get("width") is None and node.get("height") is None:
        return ex.new(
            "LatentUpscaleBy", samples=samples, upscale_method=method, scale_by=node.get("scale", 2.0)
        )
    return ex.new(
        "LatentUpscale",
        samples=samples,
        upscale_method=method,
        width=node.get("width"),
        height=node.get("height"),
        crop="disabled",
    )


def _lora(ex: _Exporter, name: str, node: dict[str, Any]) -> str:
    return ex.new(
        "LoraLoader",
        model=ex.link(node["unet"], name),
        clip=ex.link(node["text_encoder"], name),
        lora_name=node["path"],
        strength_model=node.get("unet_weight", 1.0),
        strength_clip=node.get("text_encoder_weight", 1.0),
    )


_HANDLERS: dict[str, Any] = {
    "diffusion.load_model": lambda ex, name, n: ex.new("CheckpointLoaderSimple", ckpt_name=n["path"]),
    "diffusion.load_vae": lambda ex, name, n: ex.new("VAELoader", vae_name=n["path"]),
    "diffusion.load_lora": _lora,
    "diffusion.encode_text": _encode,
    "diffusion.empty_latents": lambda ex, name, n: ex.new(
        "EmptyLatentImage",
        width=n.get("width", 512),
        height=n.get("height", 512),
        batch_size=n.get("batch", 1),
    ),
    "diffusion.sample": _sample,
    "diffusion.vae_decode": lambda ex, name, n: ex.new(
        "VAEDecode", samples=ex.link(n["latents"], name), vae=ex.link(n["vae"], name)
    ),
    "diffusion.vae_encode": lambda ex, name, n: ex.new(
        "VAEEncode", pixels=ex.link(n["image"], name), vae=ex.link(n["vae"], name)
    ),
    "diffusion.latent_upscale": _upscale,
    "diffusion.set_mask": lambda ex, name, n: ex.new(
        "SetLatentNoiseMask", samples=ex.link(n["latents"], name), mask=ex.link(n["mask"], name)
    ),
    "core.save_image": _save,
    "core.load_image": lambda ex, name, n: ex.new("LoadImage", image=n["path"], upload="image"),
    "core.resize": lambda ex, name, n: ex.new(
        "ImageScale",
        image=ex.link(n["image"], name),
        width=n["width"],
        height=n["height"],
        crop="disabled",
        upscale_method={"nearest": "nearest-exact"}.get(n.get("method", "bilinear"), n.get("method")),
    ),
    "control.load_controlnet": lambda ex, name, n: ex.new("ControlNetLoader", control_net_name=n["path"]),
    "diffusion.set_area": lambda ex, name, n: ex.new(
        "ConditioningSetAreaPercentage" if n.get("percentage") else "ConditioningSetArea",
        conditioning=ex.link(n["conditioning"], name),
        **{k: n.get(k, 0) for k in ("width", "height", "x", "y")},
        strength=n.get("strength", 1.0),
    ),
    "diffusion.set_area_strength": lambda ex, name, n: ex.new(
        "ConditioningSetAreaStrength",
        conditioning=ex.link(n["conditioning"], name),
        strength=n.get("strength", 1.0),
    ),
    "diffusion.combine": lambda ex, name, n: ex.new(
        "ConditioningCombine",
        conditioning_1=ex.link(n["first"], name),
        conditioning_2=ex.link(n["second"], name),
    ),
    "diffusion.zero_out": lambda ex, name, n: ex.new(
        "ConditioningZeroOut", conditioning=ex.link(n["conditioning"], name)
    ),
    **IMAGE_HANDLERS,
}
_SKIPPED = {"diffusion.scheduler", "diffusion.k_sampler", "control.controlnet"}  # folded into the sampler


def _literal(value: Any, params: dict[str, Any]) -> Any:
    """`$param` replaced by its value, `$$`/`@@` escapes undone; links (`@x`) kept."""
    if isinstance(value, list):
        return [_literal(v, params) for v in value]
    if isinstance(value, str):
        if value.startswith(("$$", "@@")):
            return value[1:]
        if value.startswith("$"):
            return params.get(value[1:])
    return value


def export_graph(resolved: dict[str, Any]) -> dict[str, Any]:
    """A ComfyUI API-format prompt for a resolved graph (`Plan.resolved`: every param has the value used).

    Raises `ConversionError` listing every node it cannot take."""
    params = {k: (v or {}).get("default") for k, v in (resolved.get("params") or {}).items()}
    nodes = {
        name: {k: _literal(v, params) for k, v in body.items()}
        for name, body in (resolved.get("nodes") or {}).items()
    }
    ex = _Exporter({"nodes": nodes})
    sinks = [name for name, node in ex.nodes.items() if node.get("type") == "core.save_image"]
    if not sinks:
        ex.problems.append("the graph has no core.save_image node (ComfyUI needs an output node)")
    for name in sinks:
        ex.emit(name)
    unused = [
        name
        for name, node in ex.nodes.items()
        if name not in ex.ids and node.get("type") not in _SKIPPED and node.get("type") not in _HANDLERS
    ]
    ex.problems += [f"node '{n}' ({ex.nodes[n]['type']}): no ComfyUI counterpart" for n in unused]
    if ex.problems:
        raise ConversionError(list(dict.fromkeys(ex.problems)))
    return ex.prompt
