"""Why a model could not be loaded, said plainly: what is missing, where we looked, what to do.

Why a module of its own: the loaders' failures come from torch, diffusers and transformers in their
words (torch's `weights_only` errors advise `weights_only=False`, which would run the pickle's code;
diffusers names a file in the wrong folder). These helpers turn them into the user's terms.
"""

from __future__ import annotations

import re
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")

# the file a diffusers/transformers component folder normally holds, for the message
EXPECTED_FILE = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
LABEL = {"unet": "UNet", "vae": "VAE", "text_encoder": "text encoder"}


def weight_files(folder: Path) -> list[Path]:
    """The weights files directly in `folder` (safetensors or pickled), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)


def missing_component(model: Path, component: str | None) -> str | None:
    """What a diffusers model folder lacks for `component` (its folder, config or weights), or None.

    `component` None checks `model` itself as a component folder (a `vae/` folder given alone).
    """
    folder = model / component if component else model
    label = LABEL.get(component or "", component or "model component")
    whose = f"the model '{model}'" if component else f"the folder '{model}'"
    if not folder.is_dir():
        return f"{whose} has no {component or 'such'} folder (looked for '{folder}')"
    if not (folder / "config.json").is_file():
        return f"{whose} is missing its {label} config: no config.json in '{folder}'"
    if not weight_files(folder):
        expected = EXPECTED_FILE.get(component or "", "diffusion_pytorch_model.safetensors")
        found = sorted(p.name for p in folder.iterdir())
        return (f"{whose} is missing its {label} weights: '{folder}' holds no weights file (looked for "
                f"{expected} or any {', '.join('*' + s for s in WEIGHT_SUFFIXES)}; found: "
                f"{', '.join(found) or 'nothing'})")
    return None


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def pickle_load_problem(path: Path, exc: BaseException) -> str:
    """Explain a failed `torch.load(weights_only=True)` without torch's advice to disable the check."""
    text = str(exc)
    needed = _GLOBAL.search(text)
    if needed:
        return (f"cannot read pickled weights '{path}': besides tensors it holds Python objects "
                f"({needed.group(1)}), which nodegraph never unpickles (that could run code, even with "
                "--allow-pickle); convert the file to .safetensors with a tool you trust")
    if "central directory" in text or "zip archive" in text or isinstance(exc, EOFError):
        return f"cannot read pickled weights '{path}': the file is truncated or corrupt"
    reason = _REASON.search(text)  # torch's own words after its advice
    first = reason.group(1) if reason else next((ln for ln in text.splitlines() if ln.strip()), "")
    detail = re.sub(r"\s+", " ", first).strip()[:160] or type(exc).__name__
    return f"cannot read pickled weights '{path}': not a PyTorch checkpoint, or a damaged one ({detail})"
