"""Model residency: one copy of each model per process, materialised on demand and pinned while used.

Keys are content fingerprints (plus a component name), so two nodes or two graphs naming the same file
share one module. `use()` acquires and pins in one step (under one lock): an entry is never moved or
evicted while pinned.

Memory policy (each component of a checkpoint is its own entry, so it moves on its own):
- an accelerator keeps models while their sizes fit its VRAM budget (default: what the device has
  minus a margin); to make room, the least-recently-used unpinned models are *offloaded* to the host;
- the host (CPU RAM) keeps models while they fit the RAM budget (default: no limit); past it the
  least-recently-used unpinned models are *dropped* (loaded again from disk when next needed);
- a model that alone exceeds a budget is still placed (the run goes on) and a note says so.

Sizes are measured from parameters and buffers at the target dtype; tests inject `size_of` and a
`mover` to exercise the policy with fake devices and sizes.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nodegraph.runtime.devices import default_vram_budget, device_key, format_size

SizeOf = Callable[[Any, Any], int]  # (value, dtype or None) -> bytes
Mover = Callable[[Any, str, Any], Any]  # (value, device key, dtype or None) -> value there


@dataclass
class ResidencyStats:
    """Counters since the manager was created; `since(snapshot)` gives one run's share."""

    loads: Counter[str] = field(default_factory=Counter)
    moves: int = 0
    evictions: int = 0  # entries removed for good (dropped past the RAM budget or max_entries)
    offloads: int = 0  # entries moved from an accelerator to the host to make room
    peak_bytes: dict[str, int] = field(default_factory=dict)  # per device: most bytes resident at once
    notes: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {"loads": sum(self.loads.values()), "moves": self.moves, "evictions": self.evictions,
                "offloads": self.offloads, "notes": len(self.notes)}

    def since(self, before: dict[str, Any]) -> dict[str, Any]:
        """What happened after `before` (a `snapshot()`): loads, offloads, drops, peaks, notes."""
        now = self.snapshot()
        return {
            "loads": now["loads"] - before["loads"],
            "moves": now["moves"] - before["moves"],
            "offloads": now["offloads"] - before["offloads"],
            "drops": now["evictions"] - before["evictions"],
            "peak_bytes": dict(self.peak_bytes),
            "notes": self.notes[before["notes"]:],
        }


@dataclass
class _Entry:
    value: Any
    pins: int = 0
    size: int = 0
    location: str = "cpu"
    dtype: Any = None  # dtype of the floating-point weights now
    loaded_dtype: Any = None  # dtype right after loading (converting back to it would lose precision)
    derived: dict[str, Any] = field(default_factory=dict)  # compiled wrappers and the like


def is_module(value: Any) -> bool:
    """Torch modules (anything with `.to` and `.parameters`) are placed; other values stay on the host."""
    return hasattr(value, "to") and hasattr(value, "parameters")


def module_bytes(value: Any, dtype: Any = None) -> int:
    """Bytes of a module's parameters and buffers, floating ones counted at `dtype` when given."""
    if not is_module(value):
        return 0
    tensors = list(value.parameters())
    if hasattr(value, "buffers"):
        tensors += list(value.buffers())
    total = 0
    for t in {id(t): t for t in tensors}.values():
        size = t.element_size()
        if dtype is not None and t.is_floating_point():
            size = dtype.itemsize
        total += t.nelement() * size
    return total


def move_module(value: Any, device: str, dtype: Any) -> Any:
    """Move a torch module in place (floating weights to `dtype` when given)."""
    import torch

    target = torch.device(device)
    return value.to(device=target, dtype=dtype) if dtype is not None else value.to(target)


def _weights(value: Any) -> tuple[str | None, Any]:
    param = next(iter(value.parameters()), None) if is_module(value) else None
    if param is None:
        return None, None
    return device_key(param.device), param.dtype


class ResidencyManager:
    """Loads models once per key, keeps them under memory budgets, moves them where they are used."""

    def __init__(
        self,
        max_entries: int | None = None,
        *,
        vram_budget: int | dict[str, int] | None = None,
        ram_budget: int | None = None,
        host: str = "cpu",
        size_of: SizeOf | None = None,
        mover: Mover | None = None,
    ) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest use first
        self._lock = threading.RLock()
        self.max_entries = max_entries
        self.vram_budget = vram_budget
        self.ram_budget = ram_budget
        self.host = host
        self._size_of = size_of or module_bytes
        self._move = mover or move_module
        self._default_budgets: dict[str, int | None] = {}
        self.stats = ResidencyStats()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def load_count(self, key_prefix: str = "") -> int:
        """How many loads happened for keys starting with `key_prefix` (all loads by default)."""
        return sum(n for k, n in self.stats.loads.items() if k.startswith(key_prefix))

    # ------------------------------------------------------------------------------------------ queries

    def budget(self, location: str) -> int | None:
        """The byte budget of a device: the RAM budget for the host, the VRAM budget otherwise."""
        if location == self.host:
            return self.ram_budget
        if isinstance(self.vram_budget, dict):
            return self.vram_budget.get(location)
        if self.vram_budget is not None:
            return self.vram_budget
        if location not in self._default_budgets:
            self._default_budgets[location] = default_vram_budget(location)
        return self._default_budgets[location]

    def resident_bytes(self, location: str) -> int:
        """Bytes of the models now on `location` (by their measured sizes)."""
        with self._lock:
            return sum(e.size for e in self._entries.values() if e.location == location)

    def where(self, key: str) -> str | None:
        """The device key an entry is on, or None when it is not loaded."""
        entry = self._entries.get(key)
        return entry.location if entry is not None else None

    def begin_run(self) -> dict[str, Any]:
        """Start a run's accounting: peaks restart from what is resident now; returns a snapshot."""
        with self._lock:
            self.stats.peak_bytes = {}
            self._record_peak()
            return self.stats.snapshot()

    # ---------------------------------------------------------------------------------------- acquiring

    @contextmanager
    def use(
        self,
        key: str,
        load: Callable[[], Any],
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> Iterator[Any]:
        """Yield the resident object for `key`, loaded and placed on `device`/`dtype` if needed, pinned
        for the block (loading, making room, moving and pinning happen under one lock)."""
        entry = self.acquire(key, load, device=device, dtype=dtype)
        try:
            yield entry.value
        finally:
            with self._lock:
                entry.pins -= 1

    def acquire(self, key: str, load: Callable[[], Any], *, device: Any = None, dtype: Any = None) -> _Entry:
        """Load, place and pin `key` atomically; the caller must unpin (`use` does)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and dtype is not None and entry.dtype is not None and dtype != entry.dtype \
                    and entry.dtype != entry.loaded_dtype and entry.pins == 0:
                # converting back from a lossy dtype would give other weights than a fresh load
                del self._entries[key]
                entry = None
            if entry is None:
                entry = self._load(key, load)
            self._entries.move_to_end(key)
            entry.pins += 1
            try:
                if device is not None and is_module(entry.value):
                    self._place(key, entry, device_key(device), dtype)
                self._enforce(self.host)
                self._evict_extra()
                self._record_peak()
            except BaseException:
                entry.pins -= 1
                raise
            return entry

    def derived(self, key: str, name: str, make: Callable[[Any], Any]) -> Any:
        """An object derived from a resident entry (a compiled wrapper, say), made once and dropped with
        the entry; not counted in its size. The entry must be pinned by the caller."""
        with self._lock:
            entry = self._entries[key]
            if name not in entry.derived:
                entry.derived[name] = make(entry.value)
            return entry.derived[name]

    def _load(self, key: str, load: Callable[[], Any]) -> _Entry:
        value = load()
        location, dtype = _weights(value)
        if location in (None, "cpu"):  # loaders load into CPU memory: the host (a stand-in in tests)
            location = self.host
        entry = _Entry(value, location=location, dtype=dtype, loaded_dtype=dtype)
        entry.size = self._size_of(value, None)
        self.stats.loads[key] += 1
        self._entries[key] = entry
        return entry

    def _place(self, key: str, entry: _Entry, target: str, dtype: Any) -> None:
        if entry.location == target and (dtype is None or entry.dtype == dtype):
            return
        need = self._size_of(entry.value, dtype) if dtype is not None else entry.size
        self._make_room(target, need, key)
        entry.value = self._move(entry.value, target, dtype)
        entry.location = target
        entry.dtype = dtype if dtype is not None else entry.dtype
        entry.size = need
        entry.derived.clear()  # wrappers made for the old placement are stale
        self.stats.moves += 1

    def _make_room(self, location: str, need: int, keep: str) -> None:
        """Offload (accelerator) or drop (host) least-recently-used unpinned entries until `need` fits."""
        budget = self.budget(location)
        if budget is None:
            return
        used = sum(e.size for k, e in self._entries.items() if e.location == location and k != keep)
        for k in [k for k, e in self._entries.items() if e.location == location and k != keep]:
            if used + need <= budget:
                return
            victim = self._entries[k]
            if victim.pins or not victim.size:
                continue
            used -= victim.size
            self._evict(k, victim)
        if used + need > budget:
            self.stats.notes.append(
                f"'{keep}' needs {format_size(need)} on {location} but only {format_size(budget - used)} of "
                f"its {format_size(budget)} budget is free (the rest is in use by pinned models); placed "
                "anyway")

    def _evict(self, key: str, entry: _Entry) -> None:
        if entry.location != self.host and is_module(entry.value):
            entry.value = self._move(entry.value, self.host, None)
            entry.location = self.host
            entry.derived.clear()
            self.stats.offloads += 1
            self.stats.moves += 1
        else:
            del self._entries[key]
            self.stats.evictions += 1

    def _enforce(self, location: str) -> None:
        budget = self.budget(location)
        if budget is None:
            return
        used = self.resident_bytes(location)
        for k in [k for k, e in self._entries.items() if e.location == location]:
            if used <= budget:
                return
            entry = self._entries[k]
            if not entry.pins and entry.size:
                used -= entry.size
                self._evict(k, entry)

    def _evict_extra(self) -> None:
        if self.max_entries is None:
            return
        for key in list(self._entries):
            if len(self._entries) <= self.max_entries:
                break
            if self._entries[key].pins == 0:
                del self._entries[key]
                self.stats.evictions += 1

    def _record_peak(self) -> None:
        used: dict[str, int] = {}
        for e in self._entries.values():
            used[e.location] = used.get(e.location, 0) + e.size
        for location, size in used.items():
            if size > self.stats.peak_bytes.get(location, 0):
                self.stats.peak_bytes[location] = size

    # ------------------------------------------------------------------------------------------ freeing

    def offload_idle(self, location: str | None = None) -> int:
        """Move every unpinned model off `location` (every accelerator by default); returns how many.

        The out-of-memory fallback calls this before retrying a call with less memory in use.
        """
        with self._lock:
            moved = 0
            for key, entry in list(self._entries.items()):
                on = entry.location
                if entry.pins or on == self.host or (location is not None and on != location):
                    continue
                self._evict(key, entry)
                moved += 1
            return moved

    def clear(self) -> None:
        with self._lock:
            self._entries = OrderedDict((k, e) for k, e in self._entries.items() if e.pins)


def residency_report(manager: ResidencyManager, before: dict[str, Any]) -> dict[str, Any]:
    """One run's residency figures for the run report: loads, offloads, drops, peaks, budgets, notes.

    `peak_bytes` counts model weights resident per device; `cuda_peak_allocated` (when CUDA is in
    use) is torch's own high-water mark, activations included.
    """
    import sys

    report = manager.stats.since(before)
    locations = set(report["peak_bytes"]) | {manager.host}
    report["budgets"] = {loc: manager.budget(loc) for loc in sorted(locations)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        report["cuda_peak_allocated"] = int(torch.cuda.max_memory_allocated())
    return report
