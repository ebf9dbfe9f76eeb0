"""Model residency: one copy of each model per process, materialised on demand and pinned while used.

Keys are content fingerprints (plus a component name), so two nodes or two graphs naming the same file
share one module. `use()` acquires and pins in one step; an entry is never evicted while pinned.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ResidencyStats:
    loads: Counter[str] = field(default_factory=Counter)
    moves: int = 0
    evictions: int = 0


@dataclass
class _Entry:
    value: Any
    pins: int = 0


class ResidencyManager:
    """Loads models once per key and keeps them; moves torch modules to the requested device/dtype."""

    def __init__(self, max_entries: int | None = None) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self.max_entries = max_entries
        self.stats = ResidencyStats()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def load_count(self, key_prefix: str = "") -> int:
        """How many loads happened for keys starting with `key_prefix` (all loads by default)."""
        return sum(n for k, n in self.stats.loads.items() if k.startswith(key_prefix))

    @contextmanager
    def use(
        self,
        key: str,
        load: Callable[[], Any],
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> Iterator[Any]:
        """Yield the resident object for `key`, loading it first if needed, pinned for the block."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(load())
                self.stats.loads[key] += 1
                self._entries[key] = entry
            self._entries.move_to_end(key)
            entry.pins += 1
            self._place(entry, device, dtype)
            self._evict()
        try:
            yield entry.value
        finally:
            with self._lock:
                entry.pins -= 1

    def _place(self, entry: _Entry, device: Any, dtype: Any) -> None:
        value = entry.value
        if device is None or not hasattr(value, "to") or not hasattr(value, "parameters"):
            return
        param = next(iter(value.parameters()), None)
        if param is None:
            return
        if param.device != device or (dtype is not None and param.dtype != dtype):
            entry.value = value.to(device=device, dtype=dtype) if dtype is not None else value.to(device)
            self.stats.moves += 1

    def _evict(self) -> None:
        if self.max_entries is None:
            return
        for key in list(self._entries):
            if len(self._entries) <= self.max_entries:
                break
            if self._entries[key].pins == 0:
                del self._entries[key]
                self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries = OrderedDict((k, e) for k, e in self._entries.items() if e.pins)
