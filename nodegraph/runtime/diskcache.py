"""The disk tier of the cache: node outputs serialised *safely* (never pickle), one folder per key.

An entry is `value.json` (the structure, with type tags) plus `tensors.safetensors` (every tensor and
numpy array) and `image<N>.png` (every PIL image). Dataclasses are re-created by importing their
module and qualified name, and only if what is found there is a dataclass; anything else that is
not plain data (a torch module, an open file, ...) is simply not written to disk.
Entries are written to a temporary folder and renamed into place, so a crash never leaves half an
entry, and two processes writing one key both succeed.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

FORMAT = 1


class NotSerialisable(Exception):
    """A value the disk tier does not store (it stays in the memory tier)."""


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}
        self.images: list[Any] = []

    def encode(self, value: Any, depth: int = 0) -> Any:
        if depth > 50:
            raise NotSerialisable("value nested too deeply")
        if value is None or type(value) in (bool, int, float, str):
            return value
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            name = f"t{len(self.tensors)}"
            self.tensors[name] = value.detach().cpu().contiguous().clone()
            return {"$tensor": name}
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.ndarray):
            if value.dtype == object:
                raise NotSerialisable("numpy object arrays")
            import torch as torch_mod

            name = f"t{len(self.tensors)}"
            self.tensors[name] = torch_mod.from_numpy(np.ascontiguousarray(value)).clone()
            return {"$ndarray": name}
        if np is not None and isinstance(value, np.generic):
            return {"$npscalar": str(value.dtype), "v": value.item()}
        pil = sys.modules.get("PIL.Image")
        if pil is not None and isinstance(value, pil.Image):
            self.images.append(value)
            return {"$png": len(self.images) - 1}
        if isinstance(value, str):  # a str subclass such as InputFile: keep the class if importable
            return {"$str": _class_ref(type(value)), "v": str(value)}
        if isinstance(value, (PurePosixPath, PureWindowsPath)):
            return {"$path": str(value)}
        if isinstance(value, list):
            return [self.encode(v, depth + 1) for v in value]
        if type(value) is tuple:
            return {"$tuple": [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict:
            items = [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]
            return {"$dict": items}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                "$dataclass": _class_ref(type(value)),
                "fields": {f.name: self.encode(getattr(value, f.name), depth + 1)
                           for f in dataclasses.fields(value)},
            }
        raise NotSerialisable(f"values of type {type(value).__qualname__}")


def _class_ref(cls: type) -> str:
    if "<locals>" in cls.__qualname__:
        raise NotSerialisable(f"class {cls.__qualname__} is local to a function")
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(ref: str) -> type:
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise NotSerialisable(f"{ref} is not a class")
    return obj


class _Decoder:
    def __init__(self, tensors: dict[str, Any], folder: Path) -> None:
        self.tensors = tensors
        self.folder = folder

    def decode(self, data: Any) -> Any:
        if isinstance(data, list):
            return [self.decode(v) for v in data]
        if not isinstance(data, dict):
            return data
        if "$tensor" in data:
            return self.tensors[data["$tensor"]]
        if "$ndarray" in data:
            return self.tensors[data["$ndarray"]].numpy()
        if "$npscalar" in data:
            import numpy as np

            return np.dtype(data["$npscalar"]).type(data["v"])
        if "$png" in data:
            from PIL import Image

            with Image.open(self.folder / f"image{int(data['$png'])}.png") as im:
                im.load()
                return im.copy()
        if "$str" in data:
            cls = _import_class(data["$str"])
            if not issubclass(cls, str):
                raise NotSerialisable(f"{data['$str']} is not a str type")
            return cls(data["v"])
        if "$path" in data:
            return Path(data["$path"])
        if "$tuple" in data:
            return tuple(self.decode(v) for v in data["$tuple"])
        if "$dict" in data:
            return {_hashable(self.decode(k)): self.decode(v) for k, v in data["$dict"]}
        if "$dataclass" in data:
            cls = _import_class(data["$dataclass"])
            if not dataclasses.is_dataclass(cls):
                raise NotSerialisable(f"{data['$dataclass']} is not a dataclass")
            values = {k: self.decode(v) for k, v in data["fields"].items()}
            fields = {f.name: f for f in dataclasses.fields(cls)}
            obj = cls(**{k: v for k, v in values.items() if k in fields and fields[k].init})
            for k, v in values.items():
                if k in fields and not fields[k].init:
                    object.__setattr__(obj, k, v)
            return obj
        raise NotSerialisable(f"unknown tag in {sorted(data)}")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


class DiskCache:
    """Node outputs on disk, shared by every process that points at the same folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def __contains__(self, key: str) -> bool:
        return (self._folder(key) / "value.json").is_file()

    def get(self, key: str) -> dict[str, Any] | None:
        folder = self._folder(key)
        meta_file = folder / "value.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != FORMAT:
                return None
            tensors: dict[str, Any] = {}
            if meta.get("tensors"):
                from safetensors.torch import load_file

                tensors = load_file(str(folder / "tensors.safetensors"))
            value = _Decoder(tensors, folder).decode(meta["value"])
        except (NotSerialisable, OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
            return None  # an unreadable or stale entry is a miss, never an error
        return value if isinstance(value, dict) else None

    def put(self, key: str, outputs: dict[str, Any]) -> bool:
        """Store outputs; False when some value cannot be serialised safely (nothing is written)."""
        folder = self._folder(key)
        if (folder / "value.json").is_file():
            return True
        encoder = _Encoder()
        try:
            tree = encoder.encode(dict(outputs))
        except NotSerialisable:
            return False
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{uuid.uuid4().hex[:8]}-", dir=folder.parent))
        try:
            if encoder.tensors:
                from safetensors.torch import save_file

                save_file(encoder.tensors, str(tmp / "tensors.safetensors"))
            for i, image in enumerate(encoder.images):
                image.save(tmp / f"image{i}.png", format="PNG")
            (tmp / "value.json").write_text(json.dumps(
                {"format": FORMAT, "tensors": bool(encoder.tensors), "value": tree}))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process stored the same key first: theirs is as good
                return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return True
