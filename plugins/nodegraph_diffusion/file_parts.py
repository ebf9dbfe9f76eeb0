"""Which components a model source holds, and in which file.

A diffusers folder holds what its model_index.json lists. A single file holds only some of its shipped
config's components: SD3.5's official `sd3.5_medium.safetensors` carries the transformer and the VAE but
no text encoder, ComfyUI's `sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors` all of them, and an
all-in-one file may leave T5 out. `diffusion.load_text_encoders` gives each encoder its own file. So a
source lists its parts as (component, file) pairs, and a family asks `has_component` instead of looking
for a folder (SD3 encodes without T5 as its pipeline does when the model has none).

Light module (stdlib only): make_source and validation call it; nothing here loads weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodegraph_diffusion.types import ModelSource

NOT_PARTS = ("scheduler", "tokenizer", "feature_extractor", "image_encoder")  # no weights of their own


def config_components(config_dir: Path) -> tuple[str, ...]:
    """The weight-bearing components a shipped config folder's model_index.json names."""
    index_file = config_dir / "model_index.json"
    index: dict[str, Any] = json.loads(index_file.read_text()) if index_file.is_file() else {}
    return tuple(name for name, entry in index.items()
                 if isinstance(entry, list) and entry[0] and not name.startswith(NOT_PARTS))


def single_file_parts(family: Any, config_dir: Path, path: Path,
                      keys: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(component, file) of each component of `config_dir` whose keys the single file at `path` holds,
    by the family's key prefixes (a family that reads the whole file for a component: present)."""
    names = tuple(keys)
    found = []
    for component in config_components(config_dir):
        prefixes = family.single_file_prefixes(component)
        if prefixes is None or any(k.startswith(tuple(prefixes)) for k in names):
            found.append((component, str(path)))
    return tuple(found)


def part_path(source: ModelSource, component: str) -> str | None:
    """The file holding `component` of a single-file source (None: it has none); sources that list no
    parts (SD1.x/SDXL single files) hold every component in `path`."""
    if not source.parts:
        return source.path
    return dict(source.parts).get(component)


def has_component(source: ModelSource, component: str) -> bool:
    """Whether the source holds `component` (a diffusers folder: its sub-folder exists)."""
    if source.format == "diffusers":
        return (Path(source.path) / component).is_dir()
    return part_path(source, component) is not None
