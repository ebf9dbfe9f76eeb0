"""Import k-diffusion's `sampling` module without the rest of the k-diffusion package.

Why: the sigma-space sampler (k_sampling.py) calls k-diffusion's own sampler functions, but
`import k_diffusion` runs its package `__init__`, which imports training code needing clip, kornia,
torchvision, wandb and more (k-diffusion is installed with `--no-deps` for that reason). Its
`sampling.py` needs only torch, scipy, torchsde, torchdiffeq, tqdm and one helper of `utils.py`
(`append_dims`). So the module is loaded from the installed files under a private package name;
when the real `utils.py` cannot import (no torchvision), a stand-in `utils` holding `append_dims`
(one line: add trailing singleton dimensions) serves it. No k-diffusion maths is copied.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

PRIVATE = "nodegraph_diffusion._k_diffusion"
INSTALL_HINT = "pip install --no-deps k-diffusion==0.1.1.post1 (and torchsde, torchdiffeq)"


class KDiffusionMissing(ImportError):
    """k-diffusion (or one of the few packages its sampling module needs) is not installed."""


def _append_dims(x: Any, target_dims: int) -> Any:
    """k_diffusion.utils.append_dims: view `x` with singleton dimensions up to `target_dims`."""
    dims = target_dims - x.ndim
    if dims < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims]


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"{PRIVATE}.{name}", path)
    if spec is None or spec.loader is None:
        raise KDiffusionMissing(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def k_sampling() -> types.ModuleType:
    """k-diffusion's `sampling` module (loaded once per process, like any import)."""
    loaded = sys.modules.get(f"{PRIVATE}.sampling")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise KDiffusionMissing(f"the sigma-space sampler needs k-diffusion: {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    package = sys.modules.get(PRIVATE)
    if package is None:
        package = types.ModuleType(PRIVATE)
        package.__path__ = [str(root)]
        sys.modules[PRIVATE] = package
    if not hasattr(package, "utils"):
        try:
            package.utils = _load("utils", root / "utils.py")  # type: ignore[attr-defined]
        except ImportError:  # torchvision & co. are not installed: serve the one helper sampling uses
            utils = types.ModuleType(f"{PRIVATE}.utils")
            utils.append_dims = _append_dims  # type: ignore[attr-defined]
            sys.modules[utils.__name__] = utils
            package.utils = utils  # type: ignore[attr-defined]
    try:
        module = _load("sampling", root / "sampling.py")
    except ImportError as exc:
        raise KDiffusionMissing(
            f"k-diffusion's sampling module needs {exc.name or exc}: {INSTALL_HINT}"
        ) from exc
    package.sampling = module  # type: ignore[attr-defined]
    return module
