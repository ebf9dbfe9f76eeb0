"""The disk tier of the cache: node outputs serialised *safely* (never pickle), one folder per key.

An entry is `value.json` (the structure, with type tags) plus `tensors.safetensors` (every tensor and
numpy array) and `image<N>.png` (every PIL image). Dataclasses are re-created by importing their
module and qualified name, and only if what is found there is a dataclass; anything else that is
not plain data (a torch module, an open file, ...) is simply not written to disk.
Entries are written to a temporary folder and renamed into place, so a crash never leaves half an
entry, and two processes writing one key both succeed. A write the disk refuses (full, read-only)
leaves nothing behind and raises `DiskWriteError`, which the cache turns into a note, never a failed
run. `trim` bounds the folder's size by evicting the least recently used entries.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from safetensors import SafetensorError

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


class DiskWriteError(Exception):
    """An entry could not be written (full disk, folder gone read-only); nothing of it is left behind."""


@dataclasses.dataclass
class TrimResult:
    """What one `DiskCache.trim` found and removed."""

    entries: int = 0
    bytes_before: int = 0
    removed: int = 0
    bytes_removed: int = 0


_STALE_S = 3600.0  # a temporary folder this old belongs to a process that died mid-write
TRIM_STAMP = ".last-trim"  # its mtime: when some process last scanned the folder for the size bound
TRIM_INTERVAL_S = 600.0
_SHARD_RE = re.compile(r"^[0-9a-f]{2}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


class DiskCache:
    """Node outputs on disk, shared by every process that points at the same folder.

    Safe under concurrent processes: entries appear by renaming a complete folder into place and
    disappear by renaming it aside first, so a reader sees a whole entry or none. A reader that meets
    an unreadable entry (a torn write after a power cut, a format from another version) treats it as a
    miss and removes it, so the next store replaces it. Reading an entry marks it used (its
    `value.json` mtime), which is what `trim` evicts by.
    """

    def __init__(self, root: Path) -> None:
        from nodegraph.runtime.cachedir import usable_cache_dir

        self.root = usable_cache_dir(Path(root), "cache folder")
        self.bytes_written = 0  # by this object, since it was made (decides when a trim is due)
        self._lock = threading.Lock()

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
                raise NotSerialisable(f"format {meta.get('format')!r}")
            tensors: dict[str, Any] = {}
            if meta.get("tensors"):
                from safetensors.torch import load_file

                tensors = load_file(str(folder / "tensors.safetensors"))
            value = _Decoder(tensors, folder).decode(meta["value"])
            if not isinstance(value, dict):
                raise NotSerialisable("entry is not a dict of outputs")
        except (NotSerialisable, OSError, ValueError, KeyError, TypeError, AttributeError, ImportError,
                SafetensorError):
            _discard(folder)  # unreadable or stale: a miss, never an error; the next put replaces it
            return None
        try:
            os.utime(meta_file)  # used now: least-recently-used eviction goes by this
        except OSError:
            pass  # a read-only shared cache still serves hits
        return value

    def put(self, key: str, outputs: dict[str, Any]) -> bool:
        """Store outputs; False when some value cannot be serialised safely (nothing is written).

        Raises `DiskWriteError` when the disk refuses the write (ENOSPC, EROFS, ...), after removing
        whatever part of the entry was written.
        """
        folder = self._folder(key)
        if (folder / "value.json").is_file():
            return True
        encoder = _Encoder()
        try:
            tree = encoder.encode(dict(outputs))
        except NotSerialisable:
            return False
        tmp: Path | None = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{uuid.uuid4().hex[:8]}-", dir=folder.parent))
            size = self._write(tmp, encoder, tree)
            try:
                os.replace(tmp, folder)
            except OSError:
                if (folder / "value.json").is_file():
                    return True  # another process stored the same key first: theirs is as good
                _discard(folder)  # a broken leftover without value.json: replace it
                os.replace(tmp, folder)
            with self._lock:
                self.bytes_written += size
        except (OSError, SafetensorError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DiskWriteError(f"{reason} (writing {self.root})") from exc
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return True

    @staticmethod
    def _write(tmp: Path, encoder: _Encoder, tree: Any) -> int:
        """Write the entry's files into `tmp`; their total size in bytes."""
        if encoder.tensors:
            from safetensors.torch import save_file

            save_file(encoder.tensors, str(tmp / "tensors.safetensors"))
        for i, image in enumerate(encoder.images):
            image.save(tmp / f"image{i}.png", format="PNG")
        (tmp / "value.json").write_text(json.dumps(
            {"format": FORMAT, "tensors": bool(encoder.tensors), "value": tree}))
        return sum(f.stat().st_size for f in tmp.iterdir())

    def trim_due(self, written: int, max_bytes: int, interval_s: float = TRIM_INTERVAL_S) -> bool:
        """Whether a size-bound scan is due: `written` bytes (by this process since its last scan) are
        over 1/20 of the bound, or no process scanned this folder for `interval_s`. A scan costs about
        0.07 ms per entry (bench/disk_cache.py --trim-entries), seconds for a full 2 GB folder, so it
        is not done after every run; the bound is exceeded by at most what is written in between."""
        if written * 20 > max_bytes:
            return True
        try:
            return time.time() - (self.root / TRIM_STAMP).stat().st_mtime > interval_s
        except OSError:
            return True  # never scanned

    def _stamp(self) -> None:
        try:
            (self.root / TRIM_STAMP).touch()
        except OSError:
            pass  # a read-only folder: the next process scans again

    def trim(self, max_bytes: int, keep_fraction: float = 0.9) -> TrimResult:
        """Evict least recently used entries while the folder holds more than `max_bytes`, down to
        `keep_fraction` of it (so the next few runs do not each evict again). Also removes temporary
        folders of writers that died more than an hour ago. Safe while other processes use the cache."""
        result = TrimResult()
        entries: list[tuple[float, int, Path]] = []
        now = time.time()
        self._stamp()
        for shard in _scandir(self.root):  # only our shards: the folder may hold other things (inputs/)
            if not _SHARD_RE.match(shard.name) or not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _scandir(Path(shard.path)):
                path = Path(entry.path)
                if entry.name.startswith(".trash-"):
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                if not (entry.name.startswith(".tmp-") or _KEY_RE.match(entry.name)):
                    continue  # not an entry of ours
                try:
                    meta = (path / "value.json").stat()
                except OSError:
                    meta = None
                if meta is None:  # a writer's temporary folder, or a broken entry
                    if _age(entry, now) > _STALE_S:
                        _discard(path)
                    continue
                size = sum(f.stat().st_size for f in _scandir(path) if f.is_file(follow_symlinks=False))
                entries.append((meta.st_mtime, size, path))
        result.entries = len(entries)
        result.bytes_before = total = sum(size for _, size, _ in entries)
        if total <= max_bytes:
            return result
        target = int(max_bytes * keep_fraction)
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= target:
                break
            _discard(path)
            total -= size
            result.removed += 1
            result.bytes_removed += size
        return result


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []  # removed meanwhile by another process


def _age(entry: os.DirEntry[str], now: float) -> float:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _discard(folder: Path) -> None:
    """Remove an entry folder: renamed aside first (atomic, so no reader sees half of it), then deleted."""
    trash = folder.with_name(f".trash-{uuid.uuid4().hex[:12]}")
    try:
        os.replace(folder, trash)
    except OSError:
        return  # gone already (another process evicted it) or not ours to move
    shutil.rmtree(trash, ignore_errors=True)
