"""Where the disk cache lives, how large it may grow, and whether a folder can hold it.

The CLI keeps a disk cache by default, so a second `nodegraph run` of the same graph recomputes only
what changed. Its folder is `$NODEGRAPH_CACHE_DIR`, else the platform's user cache folder
(`$XDG_CACHE_HOME/nodegraph` or `~/.cache/nodegraph` on Linux, `~/Library/Caches/nodegraph` on macOS,
`%LOCALAPPDATA%\\nodegraph\\Cache` on Windows). `--cache-dir DIR` chooses another, `--no-cache` skips it.

Its size is bounded (`$NODEGRAPH_CACHE_MAX_MB` or `--cache-disk-mb`, default 2048 MB); past the bound the
least recently used entries are removed. 2 GB because at SD1.5's 512x512 a generation stores about
3.7 MB (the fp32 image 3.1 MB, latents, text encodings), so 2 GB keeps some 600 generations, while a
user cache folder that nobody asked to grow past a few GB is a surprise; figures in bench/README.md.

An explicitly chosen folder that cannot be used is the user's error (exit 2 before anything runs);
the default folder that cannot be used only turns the disk cache off, with a note.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from nodegraph.errors import NodegraphError

CACHE_ENV = "NODEGRAPH_CACHE_DIR"
MAX_MB_ENV = "NODEGRAPH_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048.0


def default_cache_dir() -> Path:
    """The user's cache folder for nodegraph: `$NODEGRAPH_CACHE_DIR`, else the platform's convention."""
    given = os.environ.get(CACHE_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "nodegraph" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "nodegraph"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "nodegraph"


def default_max_mb() -> float:
    """The disk cache's bound in MB: `$NODEGRAPH_CACHE_MAX_MB` when it is a number >= 0, else 2048."""
    text = os.environ.get(MAX_MB_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_MB
    try:
        value = float(text)
    except ValueError:
        raise NodegraphError(f"${MAX_MB_ENV}='{text}' is not a number of megabytes") from None
    if not value >= 0 or value == float("inf"):
        raise NodegraphError(f"${MAX_MB_ENV}='{text}' must be a finite number >= 0")
    return value


def usable_cache_dir(path: Path, what: str) -> Path:
    """Create `path` if needed and prove a file can be written in it; `what` names it in errors
    (`--cache-dir`, `$NODEGRAPH_CACHE_DIR`). Raises `NodegraphError` saying what is wrong with it.

    The probe writes and removes a real file instead of asking `os.access`, which says yes to root
    on a read-only mount and cannot see a full disk.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NodegraphError(f"{what} '{path}' is a file, not a folder; name a folder for the disk cache "
                             "(or use --no-cache)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodegraphError(f"{what} '{path}' cannot be created ({exc.strerror or exc}); name a folder "
                             "you can write to (or use --no-cache)") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        try:
            os.write(fd, b"nodegraph")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise NodegraphError(f"{what} '{path}' is not writable ({exc.strerror or exc}); name a folder you "
                             "can write to (or use --no-cache)") from None
    return path


def cli_cache_dir(no_cache: bool, cache_dir: Path | None) -> tuple[Path | None, str | None]:
    """The disk cache folder of a CLI run and a note to show: (None, None) with `--no-cache`; the
    checked `--cache-dir` (raises on a bad one); else the default folder, or (None, note) when that
    folder cannot be used — the run goes on without a disk cache rather than fail."""
    if no_cache:
        if cache_dir is not None:
            raise NodegraphError("--no-cache and --cache-dir contradict each other; give one of them")
        return None, None
    if cache_dir is not None:
        return usable_cache_dir(cache_dir, "--cache-dir"), None
    where = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV, "").strip() else "the default cache folder"
    try:
        return usable_cache_dir(default_cache_dir(), where), None
    except NodegraphError as exc:
        return None, f"disk cache off for this run: {exc}"
