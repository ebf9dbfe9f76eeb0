"""The result cache: content-addressed keys, a memory tier bounded by bytes, an optional disk tier.

A key says *what produced a value*, never what the value's bytes are: node type and version, the
literal inputs (canonical JSON), the keys of the upstream outputs it reads, and the fingerprints of
files its literals name. So a changed literal invalidates exactly that node and its descendants.
Nodes that are non-deterministic or have side effects get a key unique to the run: they always run,
and so do their descendants.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from nodegraph.document.plan import Link, PlannedNode
from nodegraph.runtime.diskcache import DiskCache, DiskWriteError

Outputs = dict[str, Any]

_SMALL = 64  # bytes charged for a value we cannot measure (numbers, short strings, handles)


# ---------------------------------------------------------------------------------------------- keys


def _canonical(value: Any) -> Any:
    """`json.dumps` fallback: the stable JSON form of literal values json does not know."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return _canonical(value.value) if not isinstance(value.value, (str, int, float)) else value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dataclass": type(value).__qualname__, **{
            f.name: getattr(value, f.name) for f in dataclasses.fields(value)}}
    if hasattr(value, "model_dump"):  # pydantic model
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"literal of type {type(value).__name__} has no canonical form for the cache key")


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces; str subclasses and paths as plain strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_canonical, allow_nan=True)


def _fingerprint_type(annotation: Any) -> Any:
    """The literal's type if it knows how to fingerprint what it names, else None."""
    return annotation if hasattr(annotation, "__nodegraph_fingerprint__") else None


def _fingerprint(fp_type: Any, value: Any, base_dir: Path, search_dirs: tuple[Path, ...]) -> Any:
    """The literal's fingerprint; types that search folders (model references) are told the run's,
    or a file found in a `--models` folder would key on nothing and a replaced one go unseen."""
    method = fp_type.__nodegraph_fingerprint__
    if search_dirs and "search_dirs" in inspect.signature(method).parameters:
        return method(value, base_dir, search_dirs=search_dirs)
    return method(value, base_dir)


def node_key(node: PlannedNode, upstream: Mapping[str, str], base_dir: Path, run_nonce: str,
             runtime: Mapping[str, str] | None = None, search_dirs: tuple[Path, ...] = ()) -> str:
    """The cache key of one node, given the keys already computed for the nodes it reads from.

    `runtime` (the device, dtype and optimize level the node is asked to run with) joins the key:
    an fp16 GPU result must not stand in for an fp32 CPU one. `search_dirs` are the run's model
    folders (`--models`), for literals that name a file found there.
    """
    spec = node.spec
    links: dict[str, Any] = {}
    for name, link in node.links.items():
        if isinstance(link, Link):
            links[name] = [upstream[link.node], link.output]
        else:
            links[name] = [[upstream[item.node], item.output] for item in link]
    fingerprints: dict[str, Any] = {}
    for name, value in node.literals.items():
        inp = spec.inputs.get(name)
        fp_type = _fingerprint_type(inp.port_type) if inp is not None else None
        if fp_type is None or value is None:
            continue
        if inp is not None and inp.is_list and isinstance(value, (list, tuple)):
            fingerprints[name] = [_fingerprint(fp_type, v, base_dir, search_dirs) for v in value]
        else:
            fingerprints[name] = _fingerprint(fp_type, value, base_dir, search_dirs)
    payload: dict[str, Any] = {
        "type": spec.type_name,
        "version": spec.version,
        "literals": node.literals,
        "links": links,
        "fingerprints": fingerprints,
    }
    if runtime:
        payload["runtime"] = dict(runtime)
    if not spec.cacheable:
        payload["run"] = run_nonce  # unique per run: never a hit, and descendants miss too
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- sizes


def estimate_bytes(value: Any, _depth: int = 0) -> int:
    """Rough memory held by a value: tensors, arrays and images counted exactly, the rest as small."""
    if _depth > 20:
        return _SMALL
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return int(value.nelement() * value.element_size())
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return int(value.nbytes)
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(value, pil.Image):
        return int(value.width * value.height * max(1, len(value.getbands())))
    if isinstance(value, (str, bytes)):
        return max(_SMALL, len(value))
    if isinstance(value, Mapping):
        return _SMALL + sum(estimate_bytes(v, _depth + 1) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return _SMALL + sum(estimate_bytes(v, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _SMALL + sum(estimate_bytes(getattr(value, f.name), _depth + 1)
                            for f in dataclasses.fields(value))
    return _SMALL


# ---------------------------------------------------------------------------------------------- tiers


@dataclasses.dataclass
class CacheStats:
    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    disk_writes: int = 0
    disk_skips: int = 0  # values that cannot be serialised safely, kept in memory only
    disk_failures: int = 0  # writes the disk refused (full, read-only): dropped, the run went on
    disk_evictions: int = 0


def terminal_budget(max_bytes: int) -> int:
    """How much of the memory tier outputs that no cacheable node reads may hold: 1/256 of it (8 MB
    at the 2 GB default; the newest such output is kept even when larger, see `MemoryCache.put`).

    Such an output (a decoded image feeding only `save_image`) is read again only when the very same
    upstream comes back — a watch re-run that changed just the file name, a sweep over a save option —
    which the newest few serve. A sweep over seeds never re-reads them, yet they filled the budget:
    +2 MB RSS per 256 px variant. The before/after figures are in bench/README.md.
    """
    return max_bytes // 256


class MemoryCache:
    """An LRU of node outputs bounded by (estimated) bytes. A value larger than the budget is not kept.

    Terminal outputs (`put(..., terminal=True)`: no cacheable node reads them) sit in their own LRU
    bounded by `terminal_max_bytes` (the newest one always kept), and are evicted first when the
    whole budget is reached.
    """

    def __init__(self, max_bytes: int, terminal_max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.terminal_max_bytes = (terminal_budget(max_bytes) if terminal_max_bytes is None
                                   else terminal_max_bytes)
        self._entries: OrderedDict[str, tuple[Outputs, int]] = OrderedDict()
        self._terminal: OrderedDict[str, tuple[Outputs, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes_used = 0
        self.terminal_bytes = 0
        self.evictions = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries or key in self._terminal

    def __len__(self) -> int:
        return len(self._entries) + len(self._terminal)

    def get(self, key: str) -> Outputs | None:
        with self._lock:
            for entries in (self._entries, self._terminal):
                entry = entries.get(key)
                if entry is not None:
                    entries.move_to_end(key)
                    return entry[0]
            return None

    def _drop(self, key: str) -> None:
        if key in self._entries:
            self.bytes_used -= self._entries.pop(key)[1]
        elif key in self._terminal:
            size = self._terminal.pop(key)[1]
            self.bytes_used -= size
            self.terminal_bytes -= size

    def _evict_oldest(self, entries: OrderedDict[str, tuple[Outputs, int]]) -> None:
        self._drop(next(iter(entries)))
        self.evictions += 1

    def put(self, key: str, outputs: Outputs, terminal: bool = False) -> bool:
        size = estimate_bytes(outputs)
        with self._lock:
            self._drop(key)
            if size > self.max_bytes:
                return False
            (self._terminal if terminal else self._entries)[key] = (outputs, size)
            self.bytes_used += size
            if terminal:
                self.terminal_bytes += size
                while self.terminal_bytes > self.terminal_max_bytes and len(self._terminal) > 1:
                    self._evict_oldest(self._terminal)  # but the newest stays, however large
            while self.bytes_used > self.max_bytes:
                self._evict_oldest(self._terminal if self._terminal else self._entries)
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._terminal.clear()
            self.bytes_used = 0
            self.terminal_bytes = 0


class Cache:
    """Both tiers behind one interface; lives in an `Engine`, so it survives across runs.

    Thread-safe: nodes on different lanes (see `lanes`) read and write it at the same time. The memory
    tier has its own lock, the disk tier writes atomically (temporary folder, then rename), and the
    counters are updated under `_lock`. The disk tier never fails a run: a write the disk refuses is
    dropped and said in the run's notes (`end_run`), which is also when the folder is trimmed to
    `disk_max_mb` (least recently used entries first).
    """

    def __init__(self, memory_mb: float = 2048, disk_dir: Path | str | None = None,
                 disk_max_mb: float | None = None) -> None:
        from nodegraph.runtime.cachedir import default_max_mb

        self.memory = MemoryCache(int(memory_mb * 1024 * 1024))
        self.disk = DiskCache(Path(disk_dir)) if disk_dir is not None else None
        if disk_max_mb is None:
            disk_max_mb = default_max_mb() if self.disk is not None else 0.0  # ($NODEGRAPH_CACHE_MAX_MB)
        self.disk_max_bytes = int(disk_max_mb * 2**20)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._notes: list[str] = []
        self._trimmed_at = 0  # the disk tier's bytes_written at this cache's last trim

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)
            self.stats.evictions = self.memory.evictions

    def note(self, message: str) -> None:
        """Something the next run's report should say about the cache (once)."""
        with self._lock:
            if message not in self._notes:
                self._notes.append(message)

    def get(self, key: str) -> Outputs | None:
        """The cached outputs for `key` (memory first, then disk, promoted to memory), or None."""
        outputs = self.memory.get(key)
        if outputs is not None:
            self._count(hits=1)
            return outputs
        if self.disk is not None:
            outputs = self.disk.get(key)
            if outputs is not None:
                self._count(hits=1, disk_hits=1)
                self.memory.put(key, outputs)
                return outputs
        self._count(misses=1)
        return None

    def put(self, key: str, outputs: Outputs, terminal: bool = False) -> None:
        """Keep outputs in memory (`terminal`: no cacheable node reads them, see `MemoryCache`) and on
        disk when there is a disk tier and every value serialises safely."""
        self.memory.put(key, outputs, terminal)
        self._count(stores=1)
        if self.disk is None:
            return
        try:
            stored = self.disk.put(key, outputs)
        except DiskWriteError as exc:
            self._count(disk_failures=1)
            self.note(f"disk cache: could not store a result ({exc}); the run went on without it")
            return
        if stored:
            self._count(disk_writes=1)
        else:
            self._count(disk_skips=1)

    def end_run(self) -> list[str]:
        """After a run: trim the disk tier when it is due (see `DiskCache.trim_due`; only after a run
        that wrote to it); the notes gathered since the last call."""
        disk = self.disk
        if disk is not None:
            written = disk.bytes_written - self._trimmed_at
            if written > 0 and disk.trim_due(written, self.disk_max_bytes):
                self._trimmed_at = disk.bytes_written
                self._count(disk_evictions=disk.trim(self.disk_max_bytes).removed)
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def clear(self) -> None:
        self.memory.clear()
