"""ComfyUI's `extra_model_paths.yaml`: more model folders, by kind, that a ComfyUI install points at.

Why: ComfyUI users keep models outside ComfyUI (an A1111 install, a shared disk) and list the folders in
that file; `--models COMFYUI_ROOT` should find them as ComfyUI does. The file has sections (`comfyui:`,
`a111:`, ...), each with an optional `base_path` (relative to the file's folder; `~` and `$VARS`
expanded) and per-kind folders (`checkpoints: models/Stable-diffusion`, several as lines of one
string), read the way ComfyUI's `utils/extra_config.py` reads them. Parsed with `yaml.safe_load` (no
objects are built from the file).
"""

from __future__ import annotations

import os
from pathlib import Path

from nodegraph.api import InputError

FILE_NAME = "extra_model_paths.yaml"
# ComfyUI's folder names -> nodegraph's model kinds (paths.KIND_FOLDERS)
COMFY_KINDS: dict[str, str] = {
    "checkpoints": "checkpoint",
    "diffusers": "checkpoint",
    "loras": "lora",
    "vae": "vae",
    "controlnet": "controlnet",
    "t2i_adapter": "adapter",
    "ipadapter": "adapter",
    "upscale_models": "upscale_model",
    "embeddings": "embedding",
}


def read_extra_paths(file: Path) -> dict[str, list[Path]]:
    """{nodegraph kind: folders} listed in one extra_model_paths.yaml (kinds nodegraph has no use for
    are left out); an unreadable or malformed file is an InputError naming it."""
    import yaml

    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read ComfyUI's model paths file '{file}': {exc}", field="path") from exc
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(f"'{file}' should hold sections of model folders (comfyui: ..., a111: ...)",
                         field="path")
    here = file.parent.resolve()
    found: dict[str, list[Path]] = {}
    for section, body in config.items():
        if body is None:
            continue
        if not isinstance(body, dict):
            raise InputError(f"'{file}': section '{section}' should map folder kinds to paths", field="path")
        base = body.get("base_path")
        root = None
        if isinstance(base, str) and base.strip():
            root = Path(os.path.expandvars(os.path.expanduser(base.strip())))
            root = root if root.is_absolute() else here / root
        for kind, value in body.items():
            if kind in ("base_path", "is_default") or not isinstance(value, str) or kind not in COMFY_KINDS:
                continue
            for line in value.split("\n"):
                line = line.strip()
                if not line:
                    continue
                folder = Path(os.path.expandvars(os.path.expanduser(line)))
                if not folder.is_absolute():
                    folder = (root or here) / folder
                found.setdefault(COMFY_KINDS[kind], []).append(Path(os.path.normpath(folder)))
    return found


def extra_folders(dirs: list[Path], kind: str) -> list[Path]:
    """The `kind` folders of the extra_model_paths.yaml in each dir (or beside a `models` dir), in order."""
    folders: list[Path] = []
    for d in dirs:
        for root in (d, d.parent) if d.name == "models" else (d,):
            file = root / FILE_NAME
            if file.is_file():
                folders += [f for f in read_extra_paths(file).get(kind, []) if f not in folders]
    return folders
