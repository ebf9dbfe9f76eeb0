"""The sweep folder: one sub-folder per variant, a JSON-lines manifest, and `--resume` bookkeeping.

    out/
      manifest.jsonl     one line per finished variant (variant -> params -> outputs -> keys -> timings)
      contact_sheet.png            all variants in a labelled grid
      seed-3-1f0c2a9e4b7d/txt2img.png   a variant's files, in a folder named by its values and key

A variant's files are each written to a temporary name and renamed into place, then its manifest
line is appended (and flushed to disk). A variant counts as done only when its line is there and
every file it lists exists with the listed content hash, so a crash at any point leaves either a
finished variant or one that `--resume` runs again — never a half-written file taken for done.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from nodegraph.runtime.context import safe_relative
from nodegraph.runtime.staging import check_target
from nodegraph.sweep.variants import Variant
from nodegraph.sweep.worker import VariantOutcome

MANIFEST = "manifest.jsonl"


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes next to their final place, fsync, and rename: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SweepFolder:
    """Writes finished variants into the sweep's output folder, each exactly once."""

    def __init__(self, out_dir: Path, resume: bool) -> None:
        self.out_dir = Path(out_dir)
        self.manifest = self.target(PurePosixPath(MANIFEST))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = read_manifest(self.manifest) if resume else {}
        if not resume and self.manifest.exists():
            self.manifest.unlink()  # a fresh sweep: forget what an earlier one in this folder did
        self._written: set[int] = set()

    def target(self, rel: PurePosixPath) -> Path:
        """Where `rel` goes in the sweep's folder; refused when a link there would take it outside."""
        check_target(self.out_dir, rel)
        return self.out_dir / rel

    def done(self, variant: Variant) -> bool:
        """True when an earlier run finished this variant (same key) and its files are intact."""
        entry = self.entries.get(variant.key)
        if entry is None:
            return False
        for item in entry.get("outputs", []):
            path = self.out_dir / str(item.get("path", ""))
            if not path.is_file() or sha256_file(path) != item.get("sha256"):
                return False
        return True

    def write(self, variant: Variant, outcome: VariantOutcome) -> dict[str, Any] | None:
        """Write a variant's files and manifest line; a second outcome for the same variant is ignored."""
        if variant.index in self._written:
            return None
        outputs = []
        for rel, data in sorted(outcome.files.items()):
            path = PurePosixPath(variant.name) / safe_relative(rel)
            write_atomic(self.target(path), data)
            outputs.append({"path": path.as_posix(), "sha256": hashlib.sha256(data).hexdigest(),
                            "bytes": len(data)})
        entry = {
            "variant": variant.name,
            "index": variant.index,
            "key": variant.key,
            "params": dict(variant.overrides),
            "outputs": outputs,
            "cache_keys": {e["node"]: e["key"] for e in outcome.events},
            "timings": {"wall_ms": round(outcome.wall_ms, 3),
                        "nodes": {e["node"]: e["wall_ms"] for e in outcome.events},
                        "executed": [e["node"] for e in outcome.events if e["status"] == "executed"],
                        **outcome.extra},
            "notes": outcome.notes,
            "scores": outcome.scores,
            "worker": outcome.worker,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        append_line(self.manifest, entry)
        self.entries[variant.key] = entry
        self._written.add(variant.index)
        return entry

    def entries_for(self, variants: Iterable[Variant]) -> list[dict[str, Any] | None]:
        """The manifest entry of each variant (None for those not finished), in the given order."""
        return [self.entries.get(v.key) for v in variants]


def append_line(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line and fsync it, so a finished variant survives a crash right after."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries by variant key (the last line wins); a torn last line from a crash is skipped."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            entries[entry["key"]] = entry
    return entries
