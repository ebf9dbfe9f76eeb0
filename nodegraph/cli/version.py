"""`nodegraph --version`: nodegraph's version, every installed pack's, and the libraries it runs on.

Everything is read from installed distributions' metadata (`importlib.metadata`), never by importing
a pack or a library, so the answer is instant and cannot fail because a pack is broken.
"""

from __future__ import annotations

import importlib.metadata
import platform

import nodegraph
from nodegraph.nodes.registry import entry_point_sources

LIBRARIES = ("torch", "diffusers", "transformers", "peft")


def _installed(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def version_lines() -> list[str]:
    """`nodegraph X`, then one line per pack (entry-point name, version, module), then the libraries."""
    lines = [f"nodegraph {nodegraph.__version__}"]
    lines += [f"pack {s.name} {s.version} ({s.module})" for s in entry_point_sources()]
    libraries = ", ".join(f"{name} {_installed(name)}" for name in LIBRARIES)
    lines.append(f"{libraries}, python {platform.python_version()}")
    return lines
