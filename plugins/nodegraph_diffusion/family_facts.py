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
from nodegraph_diffusion.families import config_family, family_named, file_family, folder_family
from nodegraph_diffusion.paths import resolve_in

Facts = dict[str, dict[str, Any]]


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a .safetensors header (reads the header only)."""
    with open(path, "rb") as raw:
        length = int.from_bytes(raw.read(8), "little")
        header = json.loads(raw.read(length))
    return {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}


def path_family(ref: Any, base_dir: Path) -> str | None:
    """The family of the model a `path` literal names, or None when the cheap look cannot tell."""
    if not isinstance(ref, str):
        return None
    try:
        path = resolve_in(ref, base_dir)
    except InputError:
        return None  # the loader says where it looked, when it runs
    if path.is_dir():
        index = path / "model_index.json"
        found = folder_family(json.loads(index.read_text())) if index.is_file() else None
        return found.name if found else None
    if path.suffix.lower() == ".safetensors":
        single = file_family(header_shapes(path))
        return single[0].name if single else None
    return None


def control_facts(req: FactsRequest) -> Facts:
    """A control model loader (ControlNet, T2I-Adapter): the family its config.json is made for.

    Read for a diffusers folder (its config.json) or a single file with a config beside it; other
    layouts are not told (the sampler still refuses a misfit when it runs)."""
    ref = req.literals.get("path")
    if not isinstance(ref, str):
        return {"out": {}}
    try:
        path = resolve_in(ref, req.base_dir, kind="controlnet")
    except InputError:
        return {"out": {}}
    config = path / "config.json" if path.is_dir() else path.with_name("config.json")
    found = config_family(json.loads(config.read_text())) if config.is_file() else None
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
    """diffusion.load_model: every component is of the checkpoint's family."""
    family = path_family(req.literals.get("path"), req.base_dir)
    part = _of(family, req.node)
    return {"unet": part, "text_encoder": part, "vae": part}


def vae_facts(req: FactsRequest) -> Facts:
    """diffusion.load_vae: the family it is told, else a full model's; a standalone VAE file is not
    told by its weights (SD1.x's and SDXL's VAEs are alike; the decoder takes its latents' family)."""
    told = req.literals.get("family")
    if isinstance(told, str) and told != "auto":
        return {"out": _of(told, req.node)}
    return {"out": _of(path_family(req.literals.get("path"), req.base_dir), req.node)}


def passthrough(req: FactsRequest, inputs: Mapping[str, str]) -> Facts:
    """Outputs that keep an input's family (output name -> input name)."""
    out: Facts = {}
    for output, name in inputs.items():
        fact = req.upstream.get(name)
        out[output] = dict(fact.facts) if isinstance(fact, Fact) else {}
    return out


def lora_facts(req: FactsRequest) -> Facts:
    return passthrough(req, {"unet": "unet", "text_encoder": "text_encoder"})


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
