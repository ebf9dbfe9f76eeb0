"""Port types the engine itself understands: files read (fingerprinted for the cache) and files written.

A literal type may define `__nodegraph_fingerprint__(value, base_dir) -> str`; the cache key then
includes that fingerprint, so editing a file a node reads re-runs the node. Packs use the same
protocol for their own types (a model reference, say).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_HASH_LIMIT = 256 * 1024 * 1024  # above this, size+mtime stand in for the content hash


def fingerprint_file(path: Path) -> str:
    """Content hash of a file (memoised by path, size and mtime); size+mtime for very large files."""
    st = path.stat()
    return _hash_file(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    if size > _HASH_LIMIT:
        return f"size{size}-mtime{mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_path(path: Path) -> str:
    """Fingerprint a file, or a folder as the hash of its files' relative names and fingerprints."""
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode())
            h.update(fingerprint_file(child).encode())
        return h.hexdigest()
    return fingerprint_file(path)


class InputFile(str):
    """A path to a file a node reads, relative to the graph file. Its content joins the cache key."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        def check(value: str) -> InputFile:
            if "\x00" in value:
                raise ValueError("a file name cannot contain a NUL character")
            return cls(value)

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema(min_length=1))

    @classmethod
    def __nodegraph_fingerprint__(cls, value: str, base_dir: Path) -> str:
        p = Path(value).expanduser()
        p = p if p.is_absolute() else base_dir / p
        if not p.exists():
            return "missing"  # the node reports the missing file with its own message
        return fingerprint_path(p)


class OutputFile(str):
    """A path, relative to the output folder, that a node writes. Must not leave the output folder."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        def check(value: str) -> OutputFile:
            text = value.replace("\\", "/")
            parts = [p for p in text.split("/") if p]
            absolute = text.startswith(("/", "~")) or (parts and ":" in parts[0]) or os.path.isabs(text)
            if absolute or ".." in parts:
                raise ValueError("must be a relative path inside the output folder (no '..', no absolute "
                                 "path)")
            if "\x00" in text:
                raise ValueError("a file name cannot contain a NUL character")
            return cls(value)

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema(min_length=1))
