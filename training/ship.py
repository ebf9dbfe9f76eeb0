"""Copy a trained family into the built-in model folder (what `builtin:tinyworld...` resolves to).

Standard diffusers layout is kept file for file (model_index.json, component configs, tokenizer,
safetensors); floating-point tensors are stored in `dtype` (float16 halves the size). diffusers loads
UNet, VAE and ControlNets as float32 whatever the file holds, but transformers keeps a text encoder
in its file's dtype, so the (0.2 MB) text encoder stays float32: a pipeline loaded from the folder
then computes exactly what the engine does. A `training.json` next to the base model records where the weights came from,
which is how tests recognise a trained (rather than random) built-in family. Shipping into the real
built-in folder also rewrites `nodegraph_diffusion/configs/tinyworld` (the config folder single-file
checkpoints of this architecture load with), since the trained VAE is wider than the random one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typing import Any

import torch

from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

NAMES = ("tinyworld", "tinyworld-pose", "tinyworld-edge", "tinyworld-style")
MARKER = "training.json"
SD_SCALING_FACTOR = 0.18215


def rescale_vae(vae: Any, target: float = SD_SCALING_FACTOR) -> Any:
    """Give `vae` SD's scaling factor without changing what it computes for the diffusion model.

    Training sets scaling_factor = 1/std of the latents. With k = old / target, the encoder's means are
    multiplied by k (quant_conv's mean half; the log-variance moves by 2 ln k) and post_quant_conv's
    weights divided by k, so `scaling_factor * encode(x)` and `decode(latents / scaling_factor)` stay
    the same; code (and tests) that assume SD's 0.18215 keep working.
    """
    import math

    k = float(vae.config.scaling_factor) / target
    channels = vae.quant_conv.out_channels // 2
    with torch.no_grad():
        vae.quant_conv.weight[:channels] *= k
        vae.quant_conv.bias[:channels] *= k
        vae.quant_conv.bias[channels:] += 2 * math.log(k)
        vae.post_quant_conv.weight /= k
    vae.register_to_config(scaling_factor=target)
    return vae


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


def _normalise_base(folder: Path) -> None:
    """SD's VAE scaling factor (see rescale_vae) and a fresh config folder for single-file loading."""
    from diffusers import AutoencoderKL

    from training.models import make_tokenizer

    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    rescale_vae(vae).save_pretrained(folder / "vae", safe_serialization=True)
    config_file = folder / "vae" / "config.json"
    config = json.loads(config_file.read_text())
    config.pop("_name_or_path", None)  # where it was loaded from: not part of the model
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / MARKER).unlink(missing_ok=True)
    # A tokenizer that was called with padding/truncation saves those settings into tokenizer.json
    # (transformers 5); ship a fresh one, byte for byte what nodegraph_diffusion.tiny writes.
    shutil.rmtree(folder / "tokenizer")
    make_tokenizer().save_pretrained(folder / "tokenizer")
    write_tokenizer(folder / "tokenizer")
    if folder.parent == default_builtin():
        from nodegraph_diffusion.tiny import CONFIGS_DIR, write_config_folder

        write_config_folder(folder, CONFIGS_DIR / "tinyworld")


def average_models(first: Path, second: Path, out: Path, weight: float = 0.5) -> Path:
    """A model whose weights are `(1 - weight) * first + weight * second` (same architecture; config and
    everything else copied from `second`). Two checkpoints along one fine-tuning path average well (a
    "model soup"); the shipped pose net is such an average (training/README.md)."""
    from safetensors.torch import load_file, save_file

    name = "diffusion_pytorch_model.safetensors"
    a, b = load_file(str(first / name)), load_file(str(second / name))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(second, out)
    save_file({k: a[k].float() * (1 - weight) + b[k].float() * weight for k in b}, str(out / name))
    return out


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
        for config_file in target.rglob("config.json"):  # where a resumed model was loaded from: not the model
            config = json.loads(config_file.read_text())
            if config.pop("_name_or_path", None) is not None:
                config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if name == "tinyworld":
            _normalise_base(target)
        for file in target.rglob("*.safetensors"):
            if "text_encoder" not in file.parts:  # transformers keeps a file's dtype on load: stay float32
                convert_file(file, getattr(torch, dtype))
        written.append(target)
    marker = target_root / "tinyworld" / MARKER
    marker.write_text(json.dumps({"trained_by": "python -m training.train", "run": run.name, "dtype": dtype,
                                  "components": [p.name for p in written], **(info or {})}, indent=2) + "\n")
    return written
