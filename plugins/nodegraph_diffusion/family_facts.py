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
    ModelFamily,
    available_families,
    config_family,
    family_named,
    file_family,
    folder_family,
    width_family,
)
from nodegraph_diffusion.file_parts import config_components, single_file_parts
from nodegraph_diffusion.fill_facts import check_fill, denoiser_facts
from nodegraph_diffusion.lora_fit import lora_misfit
from nodegraph_diffusion.paths import resolve_in

Facts = dict[str, dict[str, Any]]
CONFIGS_DIR = Path(__file__).parent / "configs"  # the shipped configs single files are read with


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a .safetensors header (reads the header only)."""
    with open(path, "rb") as raw:
        length = int.from_bytes(raw.read(8), "little")
        header = json.loads(raw.read(length))
    return {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}


def _model_at(ref: Any, base_dir: Path) -> tuple[ModelFamily, Path] | None:
    """(family, folder of its configs) of the model a `path` literal names: a diffusers folder itself,
    or the shipped config folder of a single file; None when the cheap look cannot tell."""
    if not isinstance(ref, str):
        return None
    try:
        path = resolve_in(ref, base_dir)
    except InputError:
        return None  # the loader says where it looked, when it runs
    if path.is_dir():
        index = path / "model_index.json"
        found = folder_family(json.loads(index.read_text())) if index.is_file() else None
        return (found, path) if found else None
    if path.suffix.lower() == ".safetensors":
        single = file_family(header_shapes(path))
        return (single[0], CONFIGS_DIR / single[1]) if single else None
    return None


def path_family(ref: Any, base_dir: Path) -> str | None:
    """The family of the model a `path` literal names, or None when the cheap look cannot tell."""
    found = _model_at(ref, base_dir)
    return found[0].name if found else None


def _details(family: ModelFamily, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Facts of a model's UNet (conditioning width it takes, refiner or not) and of its text encoders
    (the width they give), read from the config files at `root`."""
    index_file, unet_file = root / "model_index.json", root / "unet" / "config.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    unet: dict[str, Any] = {"refiner": family.refines_only(index)}
    if unet_file.is_file():
        unet["context"] = json.loads(unet_file.read_text()).get("cross_attention_dim")
    unet.update(denoiser_facts(family, root))  # a Fill model's extra input channels
    width = family.conditioning_width(root, index)
    return unet, {} if width is None else {"width": width}


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
    data = json.loads(config.read_text()) if config is not None else {}
    found = config_family(data) if data else None
    context = {"context": data["cross_attention_dim"]} if data.get("cross_attention_dim") else {}
    return {"out": _of(found.name if found else None, req.node, **context)}


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


def a_label(name: str) -> str:
    """'an SDXL', 'an SD1.x', 'a Flux.1': family labels are read as letters ("es-dee") or as words."""
    words = label(name)
    return f"{'an' if words[:1] in 'AEIOUS' else 'a'} {words}"


def _family(fact: Fact | list[Fact] | None) -> str | None:
    return fact.facts.get("family") if isinstance(fact, Fact) else None


def _of(family: str | None, made_by: str, **more: Any) -> dict[str, Any]:
    return {} if family is None else {"family": family, "made_by": made_by, **more}


def model_facts(req: FactsRequest) -> Facts:
    """diffusion.load_model: every component is of the checkpoint's family; the UNet also tells the
    conditioning width it takes and whether it only refines, the text encoder the width it gives."""
    found = _model_at(req.literals.get("path"), req.base_dir)
    if found is None:
        return {"unet": {}, "text_encoder": {}, "vae": {}}
    part = _of(found[0].name, req.node)
    unet, encoder = _details(*found)
    missing = _missing_encoders(req.literals.get("path"), req.base_dir, *found)
    if missing:  # e.g. Stability's sd3.5_medium.safetensors: transformer and VAE only
        encoder = {**encoder, "missing": missing}
    return {"unet": {**part, **unet}, "text_encoder": {**part, **encoder}, "vae": part}


def _missing_encoders(ref: Any, base_dir: Path, family: ModelFamily, root: Path) -> str:
    """The text encoders a single file lacks that its family needs ('' for folders and whole files)."""
    if not isinstance(ref, str) or not ref.lower().endswith(".safetensors"):
        return ""
    path = resolve_in(ref, base_dir)
    held = dict(single_file_parts(family, root, path, header_shapes(path)))
    return ", ".join(c for c in family.text_encoders if c in config_components(root) and c not in held)


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
    """diffusion.load_lora: of its UNet's family; a LoRA file whose header says it is made for another
    family (lora_fit) is refused here, before any weights load."""
    unet_fact = req.upstream.get("unet")
    family = _family(unet_fact)
    try:
        supported = family is None or family_named(family).supports_lora
    except KeyError:  # unknown family: the loader tells
        supported = True
    if not supported:  # e.g. an SD1.5 LoRA on an SD3 transformer: no LoRA reader for the family yet
        raise FactError(f"'unet' is {a_label(family)} model from node '{_node(unet_fact)}': LoRA files are "
                        f"not supported yet for {label(family)} models", field="unet")
    file = _lora_file(req.literals.get("path"), req.base_dir)
    if family is not None and file is not None and isinstance(unet_fact, Fact):
        try:
            misfit = lora_misfit(family_named(family), header_shapes(file), unet_fact.facts.get("context"),
                                 available_families())
        except (KeyError, OSError, ValueError):  # unknown family, unreadable header: the loader tells
            misfit = None
        if misfit:
            raise FactError(f"'path' names '{file.name}', but 'unet' is {a_label(family)} UNet from node "
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
    width = {"width": fact.facts["width"]} if isinstance(fact, Fact) and "width" in fact.facts else {}
    family = _family(fact)
    if isinstance(fact, Fact) and fact.facts.get("missing"):
        raise FactError(f"'encoder' comes from node '{fact.node}', whose file holds no text encoder "
                        f"({fact.facts['missing']}): load them with diffusion.load_text_encoders",
                        field="encoder")
    if family is not None and req.literals.get("t5_max_length") is not None:
        try:
            found = family_named(family)
        except KeyError:
            found = None
        if found is not None and found.t5_max_length is None:
            raise FactError(f"'encoder' is {a_label(found.name)} text encoder from node '{made}': "
                            f"{found.label} models have no T5 encoder, leave t5_max_length unset",
                            field="t5_max_length")
    return {"out": _of(family, req.node, model=made, **width)}


def _refuse(req: FactsRequest, name: str, what: str, family: str, anchor: str, anchor_what: str) -> None:
    fact = req.upstream.get(name)
    theirs = _family(fact)
    if theirs is None or theirs == family or not isinstance(fact, Fact):
        return
    via = _via(fact)
    anchor_fact = req.upstream.get(anchor)
    anchor_node = anchor_fact.node if isinstance(anchor_fact, Fact) else "?"
    raise FactError(f"'{name}' gets {label(theirs)} {what} from node '{fact.node}'{via}, but '{anchor}' is "
                    f"{a_label(family)} {anchor_what} from node '{anchor_node}': model families cannot be "
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
                            f"(model node '{made}'), but 'unet' is {a_label(family)} UNet from node "
                            f"'{_node(req.upstream.get('unet'))}': use a control model made for "
                            f"{label(family)}", field="conditions")
    _check_widths(req, family)
    _check_refiner(req, family)
    check_fill(req, family)
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


def _check_widths(req: FactsRequest, family: str) -> None:
    """Same family, other model: SDXL base prompts (2048 wide) into a refiner UNet (1280), a base
    ControlNet on a refiner: refused here, not as a shape error in the middle of the run."""
    unet = req.upstream.get("unet")
    context = unet.facts.get("context") if isinstance(unet, Fact) else None
    if not isinstance(unet, Fact) or context is None:
        return
    units = req.upstream.get("conditions")
    for name, fact, key in [*((n, req.upstream.get(n), "width") for n in ("positive", "negative")),
                            *(("conditions", u, "context")
                              for u in (units if isinstance(units, list) else []))]:
        theirs = fact.facts.get(key) if isinstance(fact, Fact) else None
        if theirs is None or theirs == context or not isinstance(fact, Fact):
            continue
        what = "conditioning" if key == "width" else "a control unit for conditioning"
        raise FactError(f"'{name}' gets {what} {theirs} wide from node '{fact.node}'{_via(fact)}, but 'unet' "
                        f"from node '{unet.node}'{_via(unet)} is {a_label(family)} UNet taking "
                        f"{context}-wide conditioning: a base's and a refiner's encoders and control "
                        "models do not fit each other's UNet", field=name)


def _check_refiner(req: FactsRequest, family: str) -> None:
    """A refiner UNet (SDXL's) started from empty latents at full strength: it only refines."""
    unet, latents = req.upstream.get("unet"), req.upstream.get("latents")
    if not (isinstance(unet, Fact) and unet.facts.get("refiner") and isinstance(latents, Fact)
            and latents.facts.get("empty")):
        return
    denoise, start = req.literals.get("denoise", 1.0), req.literals.get("start_step", 0)
    if not (isinstance(denoise, int | float) and denoise >= 1.0 and start == 0):
        return
    raise FactError(f"'unet' from node '{unet.node}'{_via(unet)} is {a_label(family)} refiner, "
                    f"which only refines: it cannot draw an image from the empty latents of node "
                    f"'{latents.node}' at full strength. Use a base model here, or give the refiner a "
                    "base's latents (graphs/sdxl_refiner.yaml) or an image with denoise < 1", field="unet")


def _via(fact: Fact) -> str:
    """' (model node X)' when the value was made by another node than the model loader."""
    made = fact.facts.get("model") or fact.facts.get("made_by")
    return f" (model node '{made}')" if made and made != fact.node else ""


def empty_facts(req: FactsRequest) -> Facts:
    """diffusion.empty_latents: nothing drawn yet (a refiner may not start here)."""
    return {"out": {"empty": True, "made_by": req.node}}
