"""Run ComfyUI workflows headless: read ComfyUI's workflow files and convert them to nodegraph graphs.

Not a node pack (it adds no nodes): a front-end helper the CLI uses for `nodegraph import comfyui`
and for `nodegraph run workflow.json|image.png`. Third-party packs map their own ComfyUI classes
through the `nodegraph.comfyui` entry-point group (see `importer`). Standard library only at import.
"""

from __future__ import annotations

from nodegraph_comfyui.convert import ClassMapping, Clip, Cond, ConversionError, Converter, Model
from nodegraph_comfyui.importer import collect, import_workflow, is_comfyui

__all__ = [
    "ClassMapping",
    "Clip",
    "Cond",
    "ConversionError",
    "Converter",
    "Model",
    "collect",
    "import_workflow",
    "is_comfyui",
]
