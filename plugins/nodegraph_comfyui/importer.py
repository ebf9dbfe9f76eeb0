"""Import a ComfyUI workflow file as a nodegraph graph document (plain data, ready for `load_plan`).

Where the class mappings come from: the built-in ones (`classes.core_mappings`), then every entry
point in the group `nodegraph.comfyui`, in name order. Such an entry point names a callable taking
no arguments and returning an iterable of `ClassMapping`: that is how a third-party node pack maps
its ComfyUI twin's classes. The engine knows nothing of this; only the CLI front end calls it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph_comfyui.classes import core_mappings
from nodegraph_comfyui.convert import ClassMapping, ConversionError, Converter
from nodegraph_comfyui.model_check import check_models, input_dirs
from nodegraph_comfyui.unsupported import KNOWN_ELSEWHERE
from nodegraph_comfyui.workflow import Workflow, detect, load_data, read_workflow

ENTRY_POINT_GROUP = "nodegraph.comfyui"

Provider = Callable[[], Iterable[ClassMapping]]


@dataclass(frozen=True)
class Mappings:
    """The class mappings in force, and notes about providers that could not be used."""

    classes: Mapping[str, ClassMapping]
    notes: tuple[str, ...] = ()


def entry_point_providers() -> list[tuple[str, Provider]]:
    """(name, provider) of every installed `nodegraph.comfyui` entry point, in name order (loaded lazily)."""
    points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    return [(point.name, lambda point=point: point.load()()) for point in points]


def collect(providers: Iterable[tuple[str, Provider]] | None = None) -> Mappings:
    """Built-in mappings first, then the providers' (default: the installed entry points).

    A provider that fails, or claims a class already mapped, is skipped with a note: one broken pack
    must not stop every import.
    """
    classes: dict[str, ClassMapping] = {m.class_type: m for m in core_mappings()}
    notes: list[str] = []
    for name, provider in entry_point_providers() if providers is None else providers:
        try:
            offered = list(provider())
        except Exception as exc:  # noqa: BLE001 - a third-party provider's failure is reported, not raised
            notes.append(f"ComfyUI mappings of '{name}' were not loaded: {type(exc).__name__}: {exc}")
            continue
        for mapping in offered:
            if not isinstance(mapping, ClassMapping):
                notes.append(f"'{name}' offered {mapping!r}, not a ClassMapping: skipped")
            elif mapping.class_type in classes:
                notes.append(f"'{name}' maps ComfyUI class '{mapping.class_type}', already mapped: skipped")
            else:
                classes[mapping.class_type] = mapping
    return Mappings(classes, tuple(notes))


def is_comfyui(path: Path) -> bool:
    """Whether `path` is a ComfyUI workflow (API or UI JSON, or a PNG carrying one)."""
    return detect(Path(path))


def read(path: Path, mappings: Mappings | None = None) -> Workflow:
    """The workflow in a file, in API form."""
    mappings = mappings or collect()
    widgets = {name: m.widgets for name, m in mappings.classes.items()}
    return read_workflow(load_data(Path(path)), widgets, str(path))


def import_workflow(
    path: Path, mappings: Mappings | None = None, model_dirs: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """A nodegraph graph document for a ComfyUI workflow file; input images not beside it are looked
    up in the `input/` folder of a ComfyUI root among `model_dirs` (as ComfyUI's LoadImage reads them).

    Raises `ConversionError` listing every problem, `NodegraphError` for an unreadable file."""
    mappings = mappings or collect()
    flow = read(path, mappings)
    return convert_workflow(flow, mappings, input_dirs(tuple(model_dirs)))


def convert_workflow(flow: Workflow, mappings: Mappings, inputs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A nodegraph graph document for a workflow in API form."""
    converter = Converter(flow, mappings.classes, KNOWN_ELSEWHERE, input_dirs=inputs)
    converter.run()
    if converter.problems:
        raise ConversionError(converter.problems)
    name = Path(flow.file).name if flow.file else "a ComfyUI workflow"
    used = sorted({n.class_type for n in flow.nodes.values()})
    graph: dict[str, Any] = {
        "version": 1,
        "description": f"Imported from the ComfyUI workflow {name} ({flow.format} format) by "
        "`nodegraph import comfyui`. Sampling uses diffusers' schedulers nearest to "
        "ComfyUI's sampler/scheduler names, not ComfyUI's own sigma tables (docs/comfyui.md).",
        "params": converter.params,
        "nodes": converter.nodes,
        "metadata": {
            "comfyui": {
                "file": name,
                "format": flow.format,
                "classes": used,
                "notes": list(mappings.notes),
                # which workflow node each nodegraph node serves (for messages naming both)
                "nodes": {k: [v, flow.nodes[v].class_type] for k, v in converter.origins.items()},
            },
            # which workflow node each node stands for: `nodegraph serve` reports ComfyUI clients'
            # progress and outputs under the ids they sent (nodegraph/cli/importers.py)
            "source_ids": converter.origins,
        },
    }
    return graph


@dataclass(frozen=True)
class _CliImporter:
    """The object the `nodegraph.importers` entry point `comfyui` names (see nodegraph/cli/importers.py)."""

    label: str = "ComfyUI workflow"

    def detect(self, path: Path) -> bool:
        return is_comfyui(path)

    def convert(self, path: Path, model_dirs: tuple[Path, ...] = ()) -> dict[str, Any]:
        return import_workflow(path, model_dirs=model_dirs)

    def check(self, resolved: dict[str, Any], file: Path | None, model_dirs: tuple[Path, ...]) -> None:
        """Every model file the resolved graph names must be found (before anything runs)."""
        check_models(resolved, file, model_dirs)

    def export(self, resolved: dict[str, Any]) -> dict[str, Any]:
        from nodegraph_comfyui.export import export_graph

        return export_graph(resolved)


IMPORTER = _CliImporter()
