"""Models by name, checked before anything runs: every model file an imported workflow names must exist.

Why at validation: a ComfyUI workflow names its models by file name (`v1-5-pruned-emaonly.safetensors`)
and ComfyUI refuses to queue a prompt whose files are missing; without this check nodegraph would
find out only when the loader runs, possibly after minutes of other work. The check runs on the
resolved graph (after `--set`), so a checkpoint given on the command line is the one checked, and
lists every missing file at once, each with the workflow node, the file name and the folders searched.
ComfyUI's own folder roots are understood: `--models` may name a ComfyUI folder (its `models/` and
`extra_model_paths.yaml` are searched) or its `models/` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodegraph_comfyui.convert import ConversionError

# nodegraph node type -> (input holding the model reference, model kind for the folder search)
MODEL_INPUTS: dict[str, tuple[str, str]] = {
    "diffusion.load_model": ("path", "checkpoint"),
    "diffusion.load_vae": ("path", "vae"),
    "diffusion.load_lora": ("path", "lora"),
    "control.load_controlnet": ("path", "controlnet"),
    "upscale.load_model": ("path", "upscale_model"),
}


def comfy_roots(model_dirs: tuple[Path, ...]) -> list[Path]:
    """The ComfyUI folders among (or above) the model dirs: a folder with `models/` or the yaml, or the
    parent of a folder called `models`."""
    roots: list[Path] = []
    for d in model_dirs:
        root = d if (d / "models").is_dir() or (d / "extra_model_paths.yaml").is_file() else None
        if root is None and d.name == "models":
            root = d.parent
        if root is not None and root not in roots:
            roots.append(root)
    return roots


def input_dirs(model_dirs: tuple[Path, ...]) -> tuple[Path, ...]:
    """ComfyUI's `input/` folders of those roots (where its LoadImage reads files)."""
    return tuple(r / "input" for r in comfy_roots(model_dirs) if (r / "input").is_dir())


def check_models(resolved: dict[str, Any], file: Path | None, model_dirs: tuple[Path, ...]) -> None:
    """Raise `ConversionError` naming every model file of the resolved graph that is not found."""
    from nodegraph_diffusion.paths import resolve_in

    from nodegraph.api import InputError

    meta = (resolved.get("metadata") or {}).get("comfyui") or {}
    origins: dict[str, list[str]] = meta.get("nodes") or {}  # nodegraph node -> [workflow id, class]
    params = {k: (v or {}).get("default") for k, v in (resolved.get("params") or {}).items()}
    base = file.parent if file is not None else Path.cwd()
    where = f"{file}: " if file is not None else ""
    problems: list[str] = []
    for name, node in (resolved.get("nodes") or {}).items():
        spec = MODEL_INPUTS.get(str(node.get("type")))
        if spec is None:
            continue
        value = node.get(spec[0])
        if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
            value = params.get(value[1:])
        if not isinstance(value, str) or not value:
            continue
        try:
            resolve_in(value, base, model_dirs, spec[1])
        except InputError as exc:
            origin = origins.get(name)
            label = (
                f"node '{origin[0]}' ({origin[1]}), nodegraph node '{name}'"
                if origin
                else f"nodegraph node '{name}'"
            )
            problems.append(f"{where}{label}: {exc}")
    if problems:
        raise ConversionError(problems)
