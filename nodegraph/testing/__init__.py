"""Test support for node packs and for nodegraph itself. Needs pytest (`pip install pytest`).

It is a pytest plugin, loaded through the `pytest11` entry point whenever pytest runs, so its
fixtures (`toy_nodes`, `call_counter`) are there without an import. What a pack's tests need is
public here, so they import nothing from the engine's internals:

- `pack_source(name, module)`, `pack_registry(*sources)`: a registry of exactly the packs under test,
  built from their modules (no installation, no other packs); `PackSource`, `build_registry` and
  `Registry` for anything else.
- `assert_contract(source)`, `contract_problems(source)`, `node_problems(spec)`: the node rules of
  docs/plugins.md (semver version, docstring, input descriptions, type name, valid defaults).
- `toy_registry`, `toy_module`, `ToyPack`, `CallCounter`, `Animal`, `Dog`: a toy pack whose nodes
  count their executions, to assert what re-ran.

`import nodegraph` never imports this module, so nodegraph works without pytest.
"""

from __future__ import annotations

try:
    import pytest
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess without pytest
    raise ModuleNotFoundError(
        "nodegraph.testing is a pytest plugin and needs pytest: pip install pytest", name=exc.name
    ) from exc

from nodegraph.nodes.registry import PackSource, Registry, build_registry
from nodegraph.testing.contract import (
    assert_contract,
    contract_problems,
    node_problems,
    pack_registry,
    pack_source,
)
from nodegraph.testing.toy import Animal, CallCounter, Dog, ToyPack, toy_module, toy_registry


@pytest.fixture
def call_counter() -> CallCounter:
    """Counts executions of the toy nodes per node type."""
    return CallCounter()


@pytest.fixture
def toy_nodes(call_counter: CallCounter) -> Registry:
    """A registry holding only the toy pack; executions are counted in `call_counter`."""
    return toy_registry(call_counter)


__all__ = [
    "Animal",
    "CallCounter",
    "Dog",
    "PackSource",
    "Registry",
    "ToyPack",
    "assert_contract",
    "build_registry",
    "contract_problems",
    "node_problems",
    "pack_registry",
    "pack_source",
    "toy_module",
    "toy_registry",
]
