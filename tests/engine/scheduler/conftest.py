"""Fixtures of the scheduler tests: fake models with injected sizes, two distinct tiny checkpoints.

- `FakeModel(name)`: looks like a torch module to the residency manager (`.to`, `.parameters`), has
  no tensors; `fake_manager(sizes, **budgets)` gives a manager whose sizes come from `sizes[name]` and
  whose moves only record the location, so placement is tested with any device names and sizes.
- `two_models`: (path A, path B) of two tiny models with different weights (session scope).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodegraph.runtime.residency import ResidencyManager


class FakeModel:
    """A stand-in module: the manager measures it with the injected `size_of` and moves it by label."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.location = "cpu"
        self.moves: list[str] = []

    def to(self, *args: Any, **kwargs: Any) -> FakeModel:
        return self

    def parameters(self) -> list[Any]:
        return []


def fake_manager(sizes: dict[str, int], **kwargs: Any) -> ResidencyManager:
    def size_of(value: Any, dtype: Any) -> int:
        return sizes[value.name]

    def mover(value: Any, device: str, dtype: Any) -> Any:
        value.location = device
        value.moves.append(device)
        return value

    return ResidencyManager(size_of=size_of, mover=mover, **kwargs)


@pytest.fixture
def fake() -> Callable[..., ResidencyManager]:
    return fake_manager


@pytest.fixture(scope="session")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The built-in tiny model and a second one with other weights, under other paths."""
    import shutil

    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("two_models")
    a = root / "ckpt_a"
    shutil.copytree(BUILTIN_DIR / "tinyworld", a)
    b = save_tiny_model(root / "ckpt_b", seed=1)
    return a, b
