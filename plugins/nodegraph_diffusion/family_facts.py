"""Validation-time facts of the diffusion nodes: which model family each value belongs to.

A link between families that do not fit (an SD1.x prompt into an SDXL UNet, SDXL latents into an SD1.x
VAE) is reported by `nodegraph validate` with the file and line, both nodes and the field, before any
weights load. The family of a model comes from the cheap parts of its files only: a diffusers folder's
model_index.json, a single file's safetensors header. Light module: stdlib, nodegraph.api, families.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.api import Fact, FactError, FactsRequest, InputError
from nodegraph_diffusion.families import (
    available_families,
    config_family,
    family_named,
    file_family,
    folder_family,
    width_family,
)
from nodegraph_diffusion.lora_fit import lora_misfit, unet_width
from nodegraph_diffusion.paths import resolve_in

Facts = dict[str, dict[str, Any]]
CONFIGS_DIR = Path(__file__).parent / "configs"  # the shipped configs single files are read with


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a .safetensors header (reads the header only)."""
    with open(path, "rb") as raw:
        length = int.from_bytes(raw.read(8), "little")
        header = json.loads(raw.read(length))
    return {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}


def path_family(ref: Any, base_dir: Path) -> str | None:
    """The family of the model a `path` literal names, or None when the cheap look cannot tell."""
    return path_model(ref, base_dir)[0]


def path_model(ref: Any, base_dir: Path) -> tuple[str | None, int | None]:
    """(family, UNet cross-attention width) of the model a `path` literal names; None where the cheap
    look cannot tell (the width is in the folder's, or the single file's shipped, unet/config.json)."""
    if not isinstance(ref, str):
        return None, None
    try:
        path = resolve_in(ref, base_dir)
    except InputError:
        return None, None  # the loader says where it looked, when it runs
    if path.is_dir():
        index = path / "model_index.json"
        found = folder_family(json.loads(index.read_text())) if index.is_file() else None
        return (found.name, unet_width(path)) if found else (None, None)
    if path.suffix.lower() == ".safetensors":
        single = file_family(header_shapes(path))
        return (single[0].name, unet_width(CONFIGS_DIR / single[1])) if single else (None, None)
    return None, None


def control_facts(req: FactsRequest) -> Facts:
    """A ControlNet loader: the family its config.json is made for.

    Read for a diffusers folder (its config.json), a single file with a config beside it, or the
    node's `config`; other layouts are not told (the sampler still refuses a misfit when it runs)."""
    return _config_facts(req, "controlnet")


def adapter_facts(req: FactsRequest) -> Facts:
    """A T2I-Adapter loader: the family its config.json's `adapter_type` is made for (as ControlNets)."""
    return _config_facts(req, "adapter")


def _config_facts(req: FactsRequest, kind: str) -> Facts:
    ref = req.literals.get("path")
    if not isinstance(ref, str):
        return {"out": {}}
    try:
        path = resolve_in(ref, req.base_dir, kind=kind)
    except InputError:
        return {"out": {}}
    config = _control_config(path, req.literals.get("config"), req.base_dir)
    found = config_family(json.loads(config.read_text())) if config is not None else None
    return {"out": _of(found.name if found else None, req.node)}


def _control_config(path: Path, given: Any, base_dir: Path) -> Path | None:
    """The config.json a control model loader reads: `config` (a folder or .json file) if given, else
    the folder's own, else beside the single file (`NAME.json`, `config.json`)."""
    if isinstance(given, str):
        place = base_dir / Path(given).expanduser()
        candidates = [place / "config.json"] if place.is_dir() else [place]
    elif path.is_dir():
        candidates = [path / "config.json"]
    else:
        candidates = [path.with_suffix(".json"), path.with_name("config.json")]
    return next((c for c in candidates if c.is_file()), None)


def ip_adapter_facts(req: FactsRequest) -> Facts:
    """control.load_ip_adapter: the family whose UNets fit the adapter's key/value projections (their
    input width is the UNet's cross-attention width), read from a .safetensors header only."""
    ref = req.literals.get("path")
    if not isinstance(ref, str):
        return {"out": {}}
    try:
        path = resolve_in(ref, req.base_dir, kind="adapter")
    except InputError:
        return {"out": {}}
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in (".safetensors", ".bin")]
        path = files[0] if len(files) == 1 else path
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return {"out": {}}  # pickled or ambiguous: the loader says what it found
    shapes = header_shapes(path)
    width = next((shape[-1] for key, shape in sorted(shapes.items()) if key.endswith("to_k_ip.weight")), None)
    found = width_family(int(width)) if width is not None else None
    return {"out": _of(found.name if found else None, req.node)}


def unit_facts(req: FactsRequest) -> Facts:
    """A control unit node: of its model's family."""
    return passthrough(req, {"out": "model"})


def label(name: str) -> str:
    try:
        return family_named(name).label
    except KeyError:
        return name


def _family(fact: Fact | list[Fact] | None) -> str | None:
    return fact.facts.get("family") if isinstance(fact, Fact) else None


def _of(family: str | None, made_by: str, **more: Any) -> dict[str, Any]:
    return {} if family is None else {"family": family, "made_by": made_by, **more}


def model_facts(req: FactsRequest) -> Facts:
    """diffusion.load_model: every component is of the checkpoint's family (the UNet's width too, so a
    LoRA made for another width is refused at its node)."""
    family, width = path_model(req.literals.get("path"), req.base_dir)
    part = _of(family, req.node)
    unet = {**part, "width": width} if part and width else part
    return {"unet": unet, "text_encoder": part, "vae": part}


def vae_facts(req: FactsRequest) -> Facts:
    """diffusion.load_vae: a full model's VAE has its family; a standalone VAE file is not told."""
    return {"out": _of(path_family(req.literals.get("path"), req.base_dir), req.node)}


def passthrough(req: FactsRequest, inputs: Mapping[str, str]) -> Facts:
    """Outputs that keep an input's family (output name -> input name)."""
    out: Facts = {}
    for output, name in inputs.items():
        fact = req.upstream.get(name)
        out[output] = dict(fact.facts) if isinstance(fact, Fact) else {}
    return out


def lora_facts(req: FactsRequest) -> Facts:
    """diffusion.load_lora: of its UNet's family; a LoRA file whose header says it is made for another
    family (lora_fit) is refused here, before any weights load."""
    unet_fact = req.upstream.get("unet")
    family = _family(unet_fact)
    file = _lora_file(req.literals.get("path"), req.base_dir)
    if family is not None and file is not None and isinstance(unet_fact, Fact):
        try:
            misfit = lora_misfit(family_named(family), header_shapes(file), unet_fact.facts.get("width"),
                                 available_families())
        except (KeyError, OSError, ValueError):  # unknown family, unreadable header: the loader tells
            misfit = None
        if misfit:
            raise FactError(f"'path' names '{file.name}', but 'unet' is an {label(family)} UNet from node "
                            f"'{_node(req.upstream.get('unet'))}': {misfit}", field="path")
    return passthrough(req, {"unet": "unet", "text_encoder": "text_encoder"})


def _lora_file(ref: Any, base_dir: Path) -> Path | None:
    """The .safetensors file a LoRA `path` literal names (a folder: its one file), if it is found here."""
    if not isinstance(ref, str):
        return None
    try:
        path = resolve_in(ref, base_dir, kind="lora")
    except InputError:
        return None  # the loader says where it looked, when it runs
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        path = files[0] if len(files) == 1 else path
    return path if path.is_file() and path.suffix.lower() == ".safetensors" else None


def encode_facts(req: FactsRequest) -> Facts:
    """diffusion.encode_text: conditioning of the encoder's family, remembering the model node."""
    fact = req.upstream.get("encoder")
    made = fact.facts.get("made_by", fact.node) if isinstance(fact, Fact) else req.node
    return {"out": _of(_family(fact), req.node, model=made)}


def _refuse(req: FactsRequest, name: str, what: str, family: str, anchor: str, anchor_what: str) -> None:
    fact = req.upstream.get(name)
    theirs = _family(fact)
    if theirs is None or theirs == family or not isinstance(fact, Fact):
        return
    model = fact.facts.get("model") or fact.facts.get("made_by")
    via = f" (model node '{model}')" if model and model != fact.node else ""
    anchor_fact = req.upstream.get(anchor)
    anchor_node = anchor_fact.node if isinstance(anchor_fact, Fact) else "?"
    raise FactError(f"'{name}' gets {label(theirs)} {what} from node '{fact.node}'{via}, but '{anchor}' is "
                    f"an {label(family)} {anchor_what} from node '{anchor_node}': model families cannot be "
                    "mixed here", field=name)


def sample_facts(req: FactsRequest) -> Facts:
    """diffusion.sample: the prompts and starting latents must be of the UNet's family."""
    family = _family(req.upstream.get("unet"))
    if family is None:
        return {"out": {}}
    for name, what in (("positive", "conditioning"), ("negative", "conditioning"), ("latents", "latents")):
        _refuse(req, name, what, family, "unet", "UNet")
    units = req.upstream.get("conditions")
    for unit in units if isinstance(units, list) else []:
        theirs = unit.facts.get("family")
        if theirs is not None and theirs != family:
            made = unit.facts.get("made_by", unit.node)
            raise FactError(f"'conditions' gets a {label(theirs)} control unit from node '{unit.node}' "
                            f"(model node '{made}'), but 'unet' is an {label(family)} UNet from node "
                            f"'{_node(req.upstream.get('unet'))}': use a control model made for "
                            f"{label(family)}", field="conditions")
    return {"out": _of(family, req.node)}


def _node(fact: Fact | list[Fact] | None) -> str:
    return fact.node if isinstance(fact, Fact) else "?"


def decode_facts(req: FactsRequest) -> Facts:
    """diffusion.vae_decode: latents must come from a sampler or encoder of the VAE's family."""
    family = _family(req.upstream.get("vae"))
    if family is not None:
        _refuse(req, "latents", "latents", family, "vae", "VAE")
    return {"out": {}}


def vae_encode_facts(req: FactsRequest) -> Facts:
    """diffusion.vae_encode*: latents of the VAE's family."""
    fact = req.upstream.get("vae")
    part = _of(_family(fact), req.node)
    return {"out": part, "latents": part, "masked": part}
