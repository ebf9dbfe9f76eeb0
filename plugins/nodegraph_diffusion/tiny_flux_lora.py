"""builtin:tinyflux-style, a tiny random LoRA for builtin:tinyflux (graphs/flux_lora.yaml's default).

Written in the BFL/ComfyUI layout most Flux LoRAs on disk use (`diffusion_model.double_blocks.0.
img_attn.qkv.lora_A.weight`, fused q/k/v and single-block `linear1`, `.alpha`; CLIP-L under
`text_encoders.clip_l.transformer.`), the layout diffusers' own reader silently skips: the graph shows
flux_lora.py reads it. A and B are random (a fresh LoRA has B = 0 and does nothing).

Regenerate with `python -m nodegraph_diffusion.tiny_flux_lora build`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).parent / "builtin"
RANK = 2
# (BFL module, its diffusers layers whose LoRAs it fuses, in output order), per block; CLIP-L's own
DOUBLE = (("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")), ("img_attn.proj", ("attn.to_out.0",)),
          ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
          ("txt_attn.proj", ("attn.to_add_out",)))
SINGLE = (("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")), ("linear2", ("proj_out",)))
CLIP = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def _lora(shapes: list[tuple[int, int]], generator: Any, scale: float) -> tuple[Any, Any]:
    """(down, up) of a LoRA fused over layers of (out, in) `shapes`: down stacked, up block-diagonal."""
    import torch

    downs = [torch.randn(RANK, shape[1], generator=generator) * scale for shape in shapes]
    ups = [torch.randn(shape[0], RANK, generator=generator) * scale for shape in shapes]
    return torch.cat(downs), torch.block_diag(*ups)


def build_tiny_flux_lora(model_folder: Path, seed: int = 1, scale: float = 0.5) -> dict[str, Any]:
    """The state dict of the built-in style LoRA for the tiny Flux model at `model_folder`."""
    import torch
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    transformer = FluxTransformer2DModel.from_pretrained(model_folder, subfolder="transformer",
                                                         local_files_only=True)
    clip = CLIPTextModel.from_pretrained(model_folder, subfolder="text_encoder", local_files_only=True)
    generator = torch.Generator("cpu").manual_seed(seed)
    state: dict[str, Any] = {}

    def add(name: str, modules: list[Any]) -> None:
        down, up = _lora([tuple(m.weight.shape) for m in modules], generator, scale)
        state[f"{name}.lora_A.weight"] = down.contiguous()
        state[f"{name}.lora_B.weight"] = up.contiguous()
        state[f"{name}.alpha"] = torch.tensor(float(down.shape[0]))

    for kind, blocks, layout in (("double_blocks", transformer.transformer_blocks, DOUBLE),
                                 ("single_blocks", transformer.single_transformer_blocks, SINGLE)):
        for i, block in enumerate(blocks):
            for bfl, parts in layout:
                add(f"diffusion_model.{kind}.{i}.{bfl}", [block.get_submodule(p) for p in parts])
    for i, layer in enumerate(clip.get_submodule("encoder.layers") if hasattr(clip, "encoder")
                              else clip.text_model.encoder.layers):
        for part in CLIP:
            add(f"text_encoders.clip_l.transformer.text_model.encoder.layers.{i}.{part}",
                [layer.get_submodule(part)])
    return state


def save_tiny_flux_lora(model_folder: Path, out_folder: Path, seed: int = 1) -> Path:
    """Write the built-in style LoRA (safetensors) into `out_folder`."""
    from safetensors.torch import save_file

    out_folder.mkdir(parents=True, exist_ok=True)
    out = out_folder / f"{out_folder.name}.safetensors"
    save_file(build_tiny_flux_lora(model_folder, seed), str(out))
    return out


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_flux_lora build [ROOT]`: regenerate builtin/tinyflux-style."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_flux_lora build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    save_tiny_flux_lora(root / "tinyflux", root / "tinyflux-style")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
