"""SD3 / SD3.5 LoRA files, read and injected as `StableDiffusion3Pipeline.load_lora_weights` does.

Unlike Flux's, SD3's `lora_state_dict` converts nothing: it reads diffusers/peft files
(`transformer.…lora_A`, `text_encoder.`, `text_encoder_2.`) and returns no network alphas (the
pipeline passes `network_alphas=None` to every component). A file in another layout (Kohya's
`lora_unet_joint_blocks_…`, ComfyUI's `diffusion_model.joint_blocks.…`) would load nothing at all
there, with only a log line; here it is refused with a message instead.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import InputError

FOREIGN_PREFIXES = ("lora_unet_", "lora_te", "diffusion_model.", "text_encoders.")


def sd3_lora_state_dict(source: str | dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """(state, None, metadata): the pipeline's read, plus a refusal of layouts it does not convert."""
    from diffusers import StableDiffusion3Pipeline

    state, metadata = StableDiffusion3Pipeline.lora_state_dict(source, return_lora_metadata=True)
    foreign = sorted(k for k in state if k.startswith(FOREIGN_PREFIXES))
    if foreign:
        raise InputError(f"diffusers reads SD3 LoRA files only in diffusers/peft layout (transformer.…"
                         f"lora_A.weight); this one names its layers the Kohya/original way (e.g. "
                         f"{foreign[0]}), which diffusers' SD3 loader does not convert", field="path")
    return state, None, metadata


def load_into_transformer(state: dict[str, Any], alphas: Any, transformer: Any, adapter_name: str,
                          metadata: Any) -> None:
    """Inject as the pipeline's `load_lora_into_transformer` (SD3 passes no network alphas)."""
    from diffusers import StableDiffusion3Pipeline
    from diffusers.loaders.lora_pipeline import _LOW_CPU_MEM_USAGE_DEFAULT_LORA

    from nodegraph_diffusion.flux_lora import owned

    # low_cpu_mem_usage as load_lora_weights' default; own copies as flux_lora.owned says why
    StableDiffusion3Pipeline.load_lora_into_transformer(owned(state), transformer=transformer,
                                                        adapter_name=adapter_name, metadata=metadata,
                                                    low_cpu_mem_usage=_LOW_CPU_MEM_USAGE_DEFAULT_LORA)
