"""Model residency: one copy of each model per process, materialised on demand and pinned while used.

Keys are content fingerprints (plus a component name), so two nodes or two graphs naming the same file
share one module. `use()` acquires and pins in one step (under one lock): an entry is never moved or
evicted while pinned.

Memory policy (each component of a checkpoint is its own entry, so it moves on its own):
- an accelerator keeps models while their sizes fit its VRAM budget (default: what the device has
  minus a margin); to make room, the least-recently-used unpinned models are *offloaded* to the host;
- the host (CPU RAM) keeps models while they fit the RAM budget (default: no limit); past it the
  least-recently-used unpinned models are *dropped* (loaded again from disk when next needed);
- a model that does not fit the room its device's budget leaves (the budget minus pinned models) is
  *streamed* when its pack gave a `Streaming` adapter (streaming.py: diffusers' group offloading for
  the diffusion pack's transformers): its weights stay on the host and groups of its blocks visit the
  device in turn, at most the room at once; a note says so. When it later fits whole, the streaming is
  undone and it is placed as usual;
- otherwise a model that alone exceeds a budget is still placed (the run goes on) and a note says so.

Every change is logged in order (`stats.events`: loaded, placed, offloaded, dropped, streamed,
unstreamed; residency_stats.py), and the run report carries the run's share.

Sizes are measured from parameters and buffers at the target dtype; tests inject `size_of` and a
`mover` to exercise the policy with fake devices and sizes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nodegraph.runtime.devices import default_vram_budget, device_key, format_size
from nodegraph.runtime.module_sizes import is_module, module_bytes, move_module, weights_place
from nodegraph.runtime.residency_stats import ResidencyEvent, ResidencyStats, residency_report
from nodegraph.runtime.streaming import Streaming, StreamPlan

__all__ = ["ResidencyEvent", "ResidencyManager", "ResidencyStats", "StreamPlan", "Streaming", "is_module",
           "module_bytes", "move_module", "residency_report"]

SizeOf = Callable[[Any, Any], int]  # (value, dtype or None) -> bytes
Mover = Callable[[Any, str, Any], Any]  # (value, device key, dtype or None) -> value there


@dataclass
class _Entry:
    value: Any
    pins: int = 0
    size: int = 0
    location: str = "cpu"
    dtype: Any = None  # dtype of the floating-point weights now
    loaded_dtype: Any = None  # dtype right after loading (converting back to it would lose precision)
    derived: dict[str, Any] = field(default_factory=dict)  # compiled wrappers and the like
    label: str = ""  # the component's name, for the event log and notes
    streaming: Streaming | None = None  # how to stream it when it does not fit (from its pack)
    streamed: StreamPlan | None = None  # set while it runs streamed (its weights on the host)
    stream_device: str | None = None  # where it is streamed to

    def bytes_on(self, location: str) -> int:
        """Its bytes on `location`: whole where it is; where it is streamed to, its plan's most-at-once
        while in use and nothing between uses (each group leaves the device after it runs)."""
        if self.streamed is not None and self.stream_device == location:
            return self.streamed.resident_bytes if self.pins else 0
        return self.size if self.location == location else 0


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
        """Bytes of the models now on `location` (by their measured sizes; streamed: most at once)."""
        with self._lock:
            return sum(e.bytes_on(location) for e in self._entries.values())

    def where(self, key: str) -> str | None:
        """The device key an entry is on, or None when it is not loaded (streamed: where its weights are)."""
        entry = self._entries.get(key)
        return entry.location if entry is not None else None

    def streamed(self, key: str) -> StreamPlan | None:
        """How an entry streams now, or None when it is placed whole (or not loaded)."""
        entry = self._entries.get(key)
        return entry.streamed if entry is not None else None

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
        label: str = "",
        streaming: Streaming | None = None,
    ) -> Iterator[Any]:
        """Yield the resident object for `key`, loaded and placed on `device`/`dtype` if needed, pinned
        for the block (loading, making room, moving and pinning happen under one lock).

        `label` names the model in the event log and notes; `streaming` is how to stream it when it
        does not fit its device's budget (without one it is placed past the budget, with a note)."""
        entry = self.acquire(key, load, device=device, dtype=dtype, label=label, streaming=streaming)
        try:
            yield entry.value
        finally:
            with self._lock:
                entry.pins -= 1

    def acquire(self, key: str, load: Callable[[], Any], *, device: Any = None, dtype: Any = None,
                label: str = "", streaming: Streaming | None = None) -> _Entry:
        """Load, place and pin `key` atomically; the caller must unpin (`use` does)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and dtype is not None and entry.dtype is not None and dtype != entry.dtype \
                    and entry.dtype != entry.loaded_dtype and entry.pins == 0:
                # converting back from a lossy dtype would give other weights than a fresh load
                self._forget(key, entry)
                entry = None
            if entry is None:
                entry = self._load(key, load, label)
            entry.streaming = streaming or entry.streaming
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

    def _log(self, event: str, key: str, entry: _Entry, size: int, device: str, detail: str = "") -> None:
        self.stats.events.append(ResidencyEvent(event, entry.label or key, size, device, key, detail))

    def _load(self, key: str, load: Callable[[], Any], label: str) -> _Entry:
        value = load()
        location, dtype = weights_place(value)
        if location in (None, "cpu"):  # loaders load into CPU memory: the host (a stand-in in tests)
            location = self.host
        entry = _Entry(value, location=location, dtype=dtype, loaded_dtype=dtype, label=label)
        entry.size = self._size_of(value, None)
        self.stats.loads[key] += 1
        self._entries[key] = entry
        if is_module(value):
            self._log("loaded", key, entry, entry.size, location)
        return entry

    def _place(self, key: str, entry: _Entry, target: str, dtype: Any) -> None:
        need = self._size_of(entry.value, dtype) if dtype is not None else entry.size
        budget = self.budget(target) if target != self.host else None
        room = None if budget is None else budget - self._pinned_bytes(target, key)
        if entry.streamed is not None:
            same = entry.stream_device == target and (dtype is None or entry.dtype == dtype)
            if same and room is not None and need > room >= entry.streamed.resident_bytes:
                self._make_room(target, entry.streamed.resident_bytes, key)  # streams as before
                return
            self._unstream(key, entry)  # it fits whole now, or streams otherwise: undo the old way first
        if entry.location == target and (dtype is None or entry.dtype == dtype):
            return
        if entry.streaming is not None and room is not None and need > room:
            self._stream(key, entry, target, dtype, need, room)
            return
        self._make_room(target, need, key)
        entry.value = self._move(entry.value, target, dtype)
        entry.location = target
        entry.dtype = dtype if dtype is not None else entry.dtype
        entry.size = need
        entry.derived.clear()  # wrappers made for the old placement are stale
        self.stats.moves += 1
        self._log("placed", key, entry, need, target)

    def _stream(self, key: str, entry: _Entry, target: str, dtype: Any, need: int, room: int) -> None:
        """Run `entry` on `target` streamed from the host, within `room` bytes there."""
        assert entry.streaming is not None
        if entry.location != self.host or (dtype is not None and entry.dtype != dtype):
            entry.value = self._move(entry.value, self.host, dtype)  # weights to the host, at the run's dtype
            if entry.location != self.host:
                self._log("offloaded", key, entry, entry.size, entry.location)
            entry.location = self.host
            entry.dtype = dtype if dtype is not None else entry.dtype
            entry.size = need
        plan = entry.streaming.stream(entry.value, target, max(room, 0))
        self._make_room(target, plan.resident_bytes, key, "streamed in the smallest groups it has")
        entry.streamed, entry.stream_device = plan, target
        entry.derived.clear()
        self.stats.moves += 1
        self._log("streamed", key, entry, plan.resident_bytes, target, plan.description)
        self.stats.notes.append(
            f"{entry.label or key} ({format_size(need)}) does not fit the {format_size(max(room, 0))} free "
            f"of the {format_size(self.budget(target))} budget on {target}: streamed {plan.description}")

    def _unstream(self, key: str, entry: _Entry) -> None:
        """Undo streaming; the weights are on the host already (each group leaves after it runs)."""
        assert entry.streaming is not None and entry.streamed is not None
        entry.streaming.unstream(entry.value)
        self._log("unstreamed", key, entry, entry.streamed.resident_bytes, entry.stream_device or "")
        entry.streamed, entry.stream_device = None, None
        entry.derived.clear()

    def _pinned_bytes(self, location: str, keep: str) -> int:
        return sum(e.bytes_on(location) for k, e in self._entries.items() if e.pins and k != keep)

    def _make_room(self, location: str, need: int, keep: str, what: str = "placed anyway") -> None:
        """Offload (accelerator) or drop (host) least-recently-used unpinned entries until `need` fits;
        a note says so when it cannot (`what`: what happens then)."""
        budget = self.budget(location)
        if budget is None:
            return
        used = sum(e.bytes_on(location) for k, e in self._entries.items() if k != keep)
        for k in [k for k, e in self._entries.items() if e.bytes_on(location) and k != keep]:
            if used + need <= budget:
                return
            victim = self._entries[k]
            if victim.pins:
                continue
            used -= victim.bytes_on(location)
            self._evict(k, victim, location)
        if used + need > budget:
            entry = self._entries.get(keep)
            name = entry.label if entry is not None and entry.label else keep
            self.stats.notes.append(
                f"'{name}' needs {format_size(need)} on {location} but only {format_size(budget - used)} of "
                f"its {format_size(budget)} budget is free (the rest is in use by pinned models); {what}")

    def _evict(self, key: str, entry: _Entry, location: str) -> None:
        """Make `entry` leave `location`: offloaded to the host from an accelerator, dropped from the host."""
        if location != self.host and entry.streamed is not None:
            self._unstream(key, entry)
            self.stats.offloads += 1
        elif location != self.host and is_module(entry.value):
            self._log("offloaded", key, entry, entry.size, entry.location)
            entry.value = self._move(entry.value, self.host, None)
            entry.location = self.host
            entry.derived.clear()
            self.stats.offloads += 1
            self.stats.moves += 1
        else:
            self._forget(key, entry)

    def _forget(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self.stats.evictions += 1
        if is_module(entry.value):
            self._log("dropped", key, entry, entry.size, entry.location)

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
                self._evict(k, entry, location)

    def _evict_extra(self) -> None:
        if self.max_entries is None:
            return
        for key in list(self._entries):
            if len(self._entries) <= self.max_entries:
                break
            if self._entries[key].pins == 0:
                self._forget(key, self._entries[key])

    def _record_peak(self) -> None:
        used: dict[str, int] = {}
        for e in self._entries.values():
            used[e.location] = used.get(e.location, 0) + e.size
            if e.streamed is not None and e.stream_device is not None:
                used[e.stream_device] = used.get(e.stream_device, 0) + e.bytes_on(e.stream_device)
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
                on = entry.stream_device if entry.streamed is not None else entry.location
                if entry.pins or on is None or on == self.host or (location is not None and on != location):
                    continue
                self._evict(key, entry, on)
                moved += 1
            return moved

    def clear(self) -> None:
        with self._lock:
            self._entries = OrderedDict((k, e) for k, e in self._entries.items() if e.pins)
