"""Copy a trained family into the built-in model folder (what `builtin:tinyworld...` resolves to).

Standard diffusers layout is kept file for file (model_index.json, component configs, tokenizer,
safetensors); floating-point tensors are stored in `dtype` (float16 halves the size). diffusers loads
UNet, VAE and ControlNets as float32 whatever the file holds, but transformers keeps a text encoder
in its file's dtype, so the (0.2 MB) text encoder stays float32: a pipeline loaded from the folder
then computes exactly what the engine does. A `training.json` next to the base model records where the weights came from,
which is how tests recognise a trained (rather than random) built-in family.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

NAMES = ("tinyworld", "tinyworld-pose", "tinyworld-edge", "tinyworld-style")
MARKER = "training.json"


def default_builtin() -> Path:
    """The diffusion pack's built-in folder."""
    from nodegraph_diffusion.paths import BUILTIN_DIR

    return BUILTIN_DIR


def convert_file(path: Path, dtype: torch.dtype) -> None:
    """Rewrite one safetensors file with its floating-point tensors in `dtype` (metadata kept)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def ship(run: Path, builtin: Path | None = None, dtype: str = "float32", info: dict | None = None) -> list[Path]:
    """Replace the built-in folders named in NAMES by the ones trained in `run` (those present)."""
    target_root = builtin or default_builtin()
    written = []
    for name in NAMES:
        source = run / name
        if not source.exists():
            continue
        target = target_root / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        for file in target.rglob("*.safetensors"):
            if "text_encoder" not in file.parts:  # transformers keeps a file's dtype on load: stay float32
                convert_file(file, getattr(torch, dtype))
        written.append(target)
    marker = target_root / "tinyworld" / MARKER
    marker.write_text(json.dumps({"trained_by": "python -m training.train", "run": run.name, "dtype": dtype,
                                  "components": [p.name for p in written], **(info or {})}, indent=2) + "\n")
    return written
